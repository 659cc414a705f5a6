/**
 * A child process of io-timeout.test.ts (forked, run by tsx): an unref'd `ioTimeout` of 100 ms,
 * and nothing else due. It says `ready`, then `timeout` when the timeout fires, and answers the
 * parent's `ping` (sent seconds later: a message is handled as soon as it wakes the process,
 * before immediates) with `ping`; it exits once it has said both.
 */
import { systemClock } from '../../src/core/index.js';
import { ioTimeout } from '../../src/core/io-timeout.js';

let said = 0;
const say = (message: string): void => {
  process.send?.(message, () => {
    if (++said === 3) process.exit(0);
  });
};

ioTimeout(systemClock, () => say('timeout'), 100).unref();
process.on('message', () => say('ping'));
say('ready');
