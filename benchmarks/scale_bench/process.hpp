// Child processes for scale_bench: the raftsync nodes (long-lived, logging to a file) and short
// commands (`raftsync status`, `cp -a`, `rm -rf`, `sync`) run with a timeout. Linux only (/proc).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace scale_bench {

// Thrown by every wait loop once SIGINT or SIGTERM reached the benchmark; main() catches it and
// the destructors stop the nodes.
struct interrupted_error : std::runtime_error {
  interrupted_error() : std::runtime_error("interrupted") {}
};

// Installs the SIGINT/SIGTERM handlers that set the flag below.
void install_interrupt_handlers();
bool interrupted();
void throw_if_interrupted();

// Starts argv[0] (a path) with stdout and stderr appended to log_path, in a process group of its
// own (a Ctrl-C in the terminal reaches the benchmark only, which then stops the nodes in order)
// and with SIGKILL as its parent-death signal (a killed benchmark leaves no node behind).
// Returns the pid, or -1 with *error set.
pid_t spawn_logged(const std::vector<std::string>& argv, const std::string& log_path,
                   std::string* error);

struct command_result {
  int exit_code = -1;  // -1: did not exit normally (signal, timeout, could not start)
  bool timed_out = false;
  std::string out;  // stdout
  std::string err;  // stderr
  double seconds = 0;
};

// Runs argv (argv[0] looked up in PATH) to completion, capturing stdout and stderr; kills it
// with SIGKILL once `timeout` has passed or the benchmark is interrupted (then throws
// interrupted_error).
command_result run_command(const std::vector<std::string>& argv, std::chrono::milliseconds timeout);

// Non-blocking: true (and *wait_status set) once the child has exited; reaps it.
bool child_exited(pid_t pid, int* wait_status);
// SIGTERM, then SIGKILL once `grace` has passed; reaps the child. Returns the seconds from the
// SIGTERM to the exit, and sets *killed when SIGKILL was needed.
double stop_child(pid_t pid, std::chrono::milliseconds grace, bool* killed, int* wait_status);
// "exit 0", "signal 9", ...
std::string describe_wait_status(int wait_status);

struct memory_sample {
  std::uint64_t rss_kib = 0;  // VmRSS
  std::uint64_t hwm_kib = 0;  // VmHWM: peak RSS since start or since reset_peak_rss()
};
bool read_memory(pid_t pid, memory_sample* sample);
// Resets VmHWM to the current RSS (echo 5 > /proc/PID/clear_refs). False when not permitted.
bool reset_peak_rss(pid_t pid);
// utime + stime of the process in clock ticks (sysconf(_SC_CLK_TCK) per second).
bool read_cpu_ticks(pid_t pid, std::uint64_t* ticks);

// Free TCP port on 127.0.0.1 for each of `count` listeners (bound together, so all differ, then
// released: a tiny race with other programs remains).
std::vector<std::uint16_t> pick_free_ports(int count);

}  // namespace scale_bench
