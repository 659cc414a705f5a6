/**
 * Short, safe descriptions of arbitrary values for error messages: never throws, never prints
 * a whole object graph, never calls user `toString()` methods.
 *
 * @internal
 */
export function describeValue(value: unknown): string {
  switch (typeof value) {
    case 'undefined':
      return 'undefined';
    case 'string':
      return value.length > 60 ? `a string of length ${value.length}` : JSON.stringify(value);
    case 'number':
      if (Number.isNaN(value)) return 'NaN';
      return Object.is(value, -0) ? '-0' : String(value);
    case 'bigint':
      return `${value}n`;
    case 'boolean':
      return String(value);
    case 'symbol':
      return value.toString();
    case 'function':
      return 'a function';
    case 'object': {
      if (value === null) return 'null';
      try {
        return describeObject(value);
      } catch {
        // A revoked Proxy throws on every inspection (even Array.isArray): still describe it.
        return 'an object that cannot be inspected (a revoked Proxy?)';
      }
    }
  }
}

/** Objects, whose inspection may run user code (getters, Proxy traps) and so may throw. */
function describeObject(value: object): string {
  if (Array.isArray(value)) return `an array of length ${value.length}`;
  if (value instanceof Uint8Array) return `a Uint8Array of length ${value.length}`;
  if (value instanceof Error) return `an error (${value.name})`;
  const proto: unknown = Object.getPrototypeOf(value);
  if (proto === Object.prototype || proto === null) return 'an object';
  const ctor = (proto as { constructor?: { name?: unknown } }).constructor;
  return typeof ctor?.name === 'string' && ctor.name !== '' ? `a ${ctor.name}` : 'an object';
}
