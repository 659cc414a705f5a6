/**
 * The per-call Redis timeout in a process that has nothing else to do: Redis is paused
 * (SIGSTOP) and the cache's timer is the only thing due in the process. A timeout that waits
 * for something else to wake the event loop (an unref'd `setImmediate` does not keep it from
 * sleeping) leaves the call hanging for as long as the process stays idle. Run in a child
 * process: a test runner's own traffic would wake the loop.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { afterEach, expect, it } from 'vitest';
import type { IdleWorkerMessage } from './idle-worker.js';
import { describeRedis, useRedis } from '../support/vitest.js';

const workerScript = fileURLToPath(new URL('./idle-worker.ts', import.meta.url));
const root = fileURLToPath(new URL('../..', import.meta.url));

const later = (ms: number): Promise<string> =>
  new Promise((resolve) => setTimeout(() => resolve('still waiting'), ms));

describeRedis('Cache Redis timeout in an idle process (child process, real Redis)', () => {
  const redis = useRedis();
  let child: ChildProcess | undefined;

  afterEach(() => {
    if (child?.exitCode === null) child.kill('SIGKILL');
    if (redis().node(0).state === 'paused') redis().resume(0);
  });

  it('a read of a paused Redis ends on its 100 ms timeout, with nothing else to wake the process', async () => {
    const worker = fork(workerScript, [String(redis().port(0))], {
      cwd: root,
      execArgv: ['--import', 'tsx'],
      stdio: ['ignore', 'ignore', 'inherit', 'ipc'],
    });
    child = worker;
    const messages: IdleWorkerMessage[] = [];
    const waiting: (() => void)[] = [];
    worker.on('message', (message: IdleWorkerMessage) => {
      messages.push(message);
      for (const wake of waiting.splice(0)) wake();
    });
    const next = async (t: IdleWorkerMessage['t']): Promise<IdleWorkerMessage> => {
      for (;;) {
        const found = messages.find((m) => m.t === t);
        if (found !== undefined) return found;
        await new Promise<void>((resolve) => waiting.push(resolve));
      }
    };
    await next('ready');
    redis().pause(0);
    worker.send('go');
    // Degraded to a miss on its 100 ms timeout; 5 s is only how long the test waits.
    await expect(Promise.race([next('done'), later(5_000)])).resolves.toEqual({
      t: 'done',
      outcome: 'value undefined',
    });
  });
});
