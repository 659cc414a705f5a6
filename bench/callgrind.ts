/**
 * Reading valgrind callgrind's output files: the instruction total of one dump, and which dump
 * of a process's main thread is the newest. Used by the diagnostics suite's counted rows
 * (`diagnostics-count.ts` reads its own dumps) and by the lock's measuring tools.
 *
 * File format: https://valgrind.org/docs/manual/cl-format.html — an `events:` line names the
 * counted events in order (`Ir` alone unless a simulation is switched on), and the
 * `summary:` / `totals:` line gives the dump's total of each, in that order.
 * File names: https://valgrind.org/docs/manual/cl-manual.html#cl-manual.options.creation —
 * with `--callgrind-out-file=<prefix>.%p`, a dump triggered before the program ends
 * (`--dump-before=<function>`) is `<prefix>.<pid>.<part>`, and `--separate-threads=yes`
 * appends `-<thread>` (`-01`: the thread that started the program, Node's main thread).
 *
 * @packageDocumentation
 */

/**
 * Instructions executed (`Ir`) in one dump, from its `totals:` line (or `summary:`, which older
 * files have instead). Throws when the text has neither or does not count `Ir`.
 */
export function instructionTotal(text: string): number {
  const events = /^events:\s*(.+)$/m.exec(text);
  const names = events === null ? ['Ir'] : (events[1] as string).trim().split(/\s+/);
  const at = names.indexOf('Ir');
  if (at < 0) throw new Error(`callgrind dump counts no Ir (events: ${names.join(' ')})`);
  const line = /^totals:\s*(.+)$/m.exec(text) ?? /^summary:\s*(.+)$/m.exec(text) ?? undefined;
  if (line === undefined) throw new Error('callgrind dump has no totals or summary line');
  const value = (line[1] as string).trim().split(/\s+/)[at];
  // A trailing zero count may be left out of the line (cl-format: "missing values are 0").
  const total = value === undefined ? 0 : Number(value);
  if (!Number.isSafeInteger(total) || total < 0)
    throw new Error(`callgrind dump: bad Ir total "${value ?? ''}"`);
  return total;
}

/**
 * The newest numbered dump of process `pid`'s thread `thread` among `files` (names in the
 * output directory, `<prefix>.<pid>.<part>-<thread>`), or `undefined` when there is none. The
 * part numbers count up from 1 in the order the dumps were written; the dump written at the
 * program's end (`<prefix>.<pid>-<thread>`, no part number) is never returned.
 */
export function newestDump(
  files: readonly string[],
  prefix: string,
  pid: number,
  thread = 1,
): string | undefined {
  const suffix = `-${String(thread).padStart(2, '0')}`;
  const head = `${prefix}.${pid}.`;
  let best: string | undefined;
  let bestPart = 0;
  for (const file of files) {
    if (!file.startsWith(head) || !file.endsWith(suffix)) continue;
    const part = file.slice(head.length, file.length - suffix.length);
    if (!/^\d+$/.test(part)) continue;
    if (Number(part) > bestPart) {
      bestPart = Number(part);
      best = file;
    }
  }
  return best;
}
