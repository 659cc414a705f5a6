/**
 * `keel/balancer` — not built yet (issue 4). The subpath exists so the package layout, exports map
 * and packaging checks are in place before the component lands; it currently exports nothing.
 *
 * @packageDocumentation
 */
export {};
