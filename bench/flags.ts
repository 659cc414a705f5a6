/**
 * Command-line flags of the measuring tools in bench/ (`--name=value`).
 * @packageDocumentation
 */

/** The number given as `--<name>=<n>` on the command line, or `fallback`. */
export function numberFlag(name: string, fallback: number): number {
  const found = process.argv.find((a) => a.startsWith(`--${name}=`));
  return found === undefined ? fallback : Number(found.slice(name.length + 3));
}
