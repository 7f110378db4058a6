#pragma once
/// The mqdist command line (launch/cli.cpp, the only user of Boost.ProgramOptions).
namespace mq::dist {
class MpiComm;
}

namespace mq::launch {
/// Parses argv and runs the chosen mode. Returns the process exit code; throws on any error
/// (main() turns the exception into one `mqdist: <message>` line and exit code 1). `world`: the
/// MPI world when started by a launcher (nullptr: one process); every rank runs the same job.
int run_cli(int argc, char** argv, const dist::MpiComm* world = nullptr);
}  // namespace mq::launch
