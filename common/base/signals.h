// Waiting for a termination signal in a daemon's main thread.
#pragma once

namespace snapledger {

// Blocks SIGTERM, SIGINT and SIGHUP in the calling thread, so threads started afterwards
// inherit the mask and the signals stay pending for WaitForTerminationSignal. Call it first in
// main(), before any thread starts. SIGPIPE is ignored (a peer closing a socket is an error
// return, not a process kill).
void BlockTerminationSignals();

// Waits until one of those signals arrives; returns its number.
int WaitForTerminationSignal();

}  // namespace snapledger
