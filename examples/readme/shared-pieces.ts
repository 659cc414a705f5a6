import { InvalidOptionError, ManualClock, isKeelError } from 'keel';

try {
  throw new InvalidOptionError('Redlock', 'retryCount', 'an integer >= 0', -1);
} catch (error) {
  if (isKeelError(error)) console.log(error.code, error.message);
  // KEEL_INVALID_OPTION Redlock: invalid option "retryCount": expected an integer >= 0, received -1
}

// Time is injected everywhere; tests drive it by hand.
const clock = new ManualClock();
clock.setTimer(() => console.log('fired at', clock.now()), 100);
clock.advance(100); // fired at 100
