#include "process.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <thread>

namespace scale_bench {
namespace {

using clock_type = std::chrono::steady_clock;
using namespace std::chrono_literals;

std::atomic<bool> interrupt_flag{false};

extern "C" void on_interrupt_signal(int) {
  interrupt_flag.store(true);
}

// argv as the char* array execv wants; the strings stay owned by `args`.
std::vector<char*> to_exec_argv(const std::vector<std::string>& args) {
  std::vector<char*> out;
  out.reserve(args.size() + 1);
  for (const std::string& arg : args)
    out.push_back(const_cast<char*>(arg.c_str()));
  out.push_back(nullptr);
  return out;
}

// Reports errno of a failed exec through a close-on-exec pipe: the parent reads 0 bytes when
// the exec succeeded. Only async-signal-safe calls between fork and exec (the benchmark has
// threads).
[[noreturn]] void exec_or_report(const std::vector<char*>& argv, bool search_path, int report_fd) {
  if (search_path) {
    execvp(argv[0], argv.data());
  } else {
    execv(argv[0], argv.data());
  }
  int saved = errno;
  ssize_t ignored = write(report_fd, &saved, sizeof saved);
  (void)ignored;
  _exit(127);
}

// -1 when the exec succeeded, else the errno the child reported.
int read_exec_report(int report_fd) {
  int child_errno = 0;
  ssize_t n;
  do {
    n = read(report_fd, &child_errno, sizeof child_errno);
  } while (n < 0 && errno == EINTR);
  close(report_fd);
  return n == static_cast<ssize_t>(sizeof child_errno) ? child_errno : -1;
}

}  // namespace

void install_interrupt_handlers() {
  struct sigaction action {};
  action.sa_handler = on_interrupt_signal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = 0;  // no SA_RESTART: blocking calls return EINTR and the loops notice
  sigaction(SIGINT, &action, nullptr);
  sigaction(SIGTERM, &action, nullptr);
  signal(SIGPIPE, SIG_IGN);
}

bool interrupted() {
  return interrupt_flag.load();
}

void throw_if_interrupted() {
  if (interrupted()) throw interrupted_error();
}

pid_t spawn_logged(const std::vector<std::string>& argv, const std::string& log_path,
                   std::string* error) {
  int log_fd = open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (log_fd < 0) {
    *error = fmt::format("cannot open {}: {}", log_path, std::strerror(errno));
    return -1;
  }
  int null_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
  int report[2];
  if (null_fd < 0 || pipe2(report, O_CLOEXEC) != 0) {
    *error = fmt::format("cannot set up the child: {}", std::strerror(errno));
    close(log_fd);
    if (null_fd >= 0) close(null_fd);
    return -1;
  }
  std::vector<char*> exec_argv = to_exec_argv(argv);
  const pid_t parent = getpid();
  pid_t pid = fork();
  if (pid == 0) {
    close(report[0]);
    setpgid(0, 0);
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(127);  // the benchmark died before prctl
    dup2(null_fd, 0);
    dup2(log_fd, 1);
    dup2(log_fd, 2);
    exec_or_report(exec_argv, false, report[1]);
  }
  close(report[1]);
  close(log_fd);
  close(null_fd);
  if (pid < 0) {
    *error = fmt::format("fork: {}", std::strerror(errno));
    close(report[0]);
    return -1;
  }
  int child_errno = read_exec_report(report[0]);
  if (child_errno >= 0) {
    int status = 0;
    waitpid(pid, &status, 0);
    *error = fmt::format("cannot run {}: {}", argv[0], std::strerror(child_errno));
    return -1;
  }
  return pid;
}

command_result run_command(const std::vector<std::string>& argv,
                           std::chrono::milliseconds timeout) {
  command_result result;
  const auto start = clock_type::now();
  const auto deadline = start + timeout;
  int out_pipe[2];
  int err_pipe[2];
  int report[2];
  if (pipe2(out_pipe, O_CLOEXEC) != 0) return result;
  if (pipe2(err_pipe, O_CLOEXEC) != 0) {
    close(out_pipe[0]);
    close(out_pipe[1]);
    return result;
  }
  if (pipe2(report, O_CLOEXEC) != 0) {
    for (int fd : {out_pipe[0], out_pipe[1], err_pipe[0], err_pipe[1]})
      close(fd);
    return result;
  }
  int null_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
  std::vector<char*> exec_argv = to_exec_argv(argv);
  const pid_t parent = getpid();
  pid_t pid = fork();
  if (pid == 0) {
    close(report[0]);
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(127);
    if (null_fd >= 0) dup2(null_fd, 0);
    dup2(out_pipe[1], 1);
    dup2(err_pipe[1], 2);
    exec_or_report(exec_argv, true, report[1]);
  }
  for (int fd : {out_pipe[1], err_pipe[1], report[1]})
    close(fd);
  if (null_fd >= 0) close(null_fd);
  if (pid < 0) {
    for (int fd : {out_pipe[0], err_pipe[0], report[0]})
      close(fd);
    result.err = fmt::format("fork: {}", std::strerror(errno));
    return result;
  }
  int child_errno = read_exec_report(report[0]);
  if (child_errno >= 0)
    result.err = fmt::format("cannot run {}: {}", argv[0], std::strerror(child_errno));

  pollfd fds[2] = {{out_pipe[0], POLLIN, 0}, {err_pipe[0], POLLIN, 0}};
  std::string* sinks[2] = {&result.out, &result.err};
  int open_fds = 2;
  int status = 0;
  bool reaped = false;
  char buffer[16384];
  while (true) {
    if (interrupted() || clock_type::now() >= deadline) {
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      reaped = true;
      result.timed_out = !interrupted();
      break;
    }
    if (open_fds > 0) {
      int ready = poll(fds, 2, 50);
      if (ready < 0 && errno != EINTR) break;
      for (int i = 0; i < 2 && ready > 0; ++i) {
        if (fds[i].fd < 0 || fds[i].revents == 0) continue;
        ssize_t n = read(fds[i].fd, buffer, sizeof buffer);
        if (n > 0) {
          sinks[i]->append(buffer, static_cast<std::size_t>(n));
        } else if (n == 0 || errno != EINTR) {
          close(fds[i].fd);
          fds[i].fd = -1;
          --open_fds;
        }
      }
      continue;
    }
    pid_t done = waitpid(pid, &status, WNOHANG);
    if (done == pid) {
      reaped = true;
      break;
    }
    std::this_thread::sleep_for(5ms);
  }
  for (pollfd& fd : fds)
    if (fd.fd >= 0) close(fd.fd);
  if (!reaped) waitpid(pid, &status, 0);
  result.seconds = std::chrono::duration<double>(clock_type::now() - start).count();
  throw_if_interrupted();
  if (!result.timed_out && WIFEXITED(status)) result.exit_code = WEXITSTATUS(status);
  return result;
}

bool child_exited(pid_t pid, int* wait_status) {
  if (pid <= 0) return true;
  return waitpid(pid, wait_status, WNOHANG) == pid;
}

double stop_child(pid_t pid, std::chrono::milliseconds grace, bool* killed, int* wait_status) {
  *killed = false;
  const auto start = clock_type::now();
  if (pid <= 0) return 0;
  kill(pid, SIGTERM);
  while (clock_type::now() - start < grace) {
    pid_t done = waitpid(pid, wait_status, WNOHANG);
    if (done == pid || (done < 0 && errno == ECHILD)) {
      return std::chrono::duration<double>(clock_type::now() - start).count();
    }
    std::this_thread::sleep_for(5ms);
  }
  kill(pid, SIGKILL);
  *killed = true;
  while (waitpid(pid, wait_status, 0) < 0 && errno == EINTR) {
  }
  return std::chrono::duration<double>(clock_type::now() - start).count();
}

std::string describe_wait_status(int wait_status) {
  if (WIFEXITED(wait_status)) return fmt::format("exit {}", WEXITSTATUS(wait_status));
  if (WIFSIGNALED(wait_status)) {
    return fmt::format("signal {} ({})", WTERMSIG(wait_status), strsignal(WTERMSIG(wait_status)));
  }
  return "unknown status";
}

bool read_memory(pid_t pid, memory_sample* sample) {
  std::ifstream in(fmt::format("/proc/{}/status", pid));
  if (!in) return false;
  std::string line;
  bool found = false;
  while (std::getline(in, line)) {
    auto value = [&line] { return std::strtoull(line.c_str() + 6, nullptr, 10); };
    if (line.rfind("VmRSS:", 0) == 0) {
      sample->rss_kib = value();
      found = true;
    } else if (line.rfind("VmHWM:", 0) == 0) {
      sample->hwm_kib = value();
    }
  }
  return found;
}

bool reset_peak_rss(pid_t pid) {
  std::ofstream out(fmt::format("/proc/{}/clear_refs", pid));
  if (!out) return false;
  out << "5\n";
  out.flush();
  return static_cast<bool>(out);
}

bool read_cpu_ticks(pid_t pid, std::uint64_t* ticks) {
  std::ifstream in(fmt::format("/proc/{}/stat", pid));
  std::string text;
  if (!in || !std::getline(in, text)) return false;
  // The command name (field 2) may hold spaces: fields are counted after its closing ')'.
  auto close_paren = text.rfind(')');
  if (close_paren == std::string::npos) return false;
  const char* p = text.c_str() + close_paren + 1;
  // Field 3 is the state; utime and stime are fields 14 and 15.
  std::uint64_t values[15] = {};
  for (int field = 3; field <= 15; ++field) {
    while (*p == ' ')
      ++p;
    char* end = nullptr;
    values[field - 1] = std::strtoull(p, &end, 10);
    if (end == p) {
      while (*p != ' ' && *p != '\0')  // the state letter
        ++p;
    } else {
      p = end;
    }
  }
  *ticks = values[13] + values[14];
  return true;
}

std::vector<std::uint16_t> pick_free_ports(int count) {
  std::vector<int> sockets;
  std::vector<std::uint16_t> ports;
  for (int i = 0; i < count; ++i) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) break;
    sockets.push_back(fd);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    address.sin_port = 0;
    socklen_t length = sizeof address;
    if (bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0 ||
        getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
      break;
    }
    ports.push_back(ntohs(address.sin_port));
  }
  for (int fd : sockets)
    close(fd);
  if (static_cast<int>(ports.size()) != count) {
    throw std::runtime_error("cannot find free ports on 127.0.0.1");
  }
  return ports;
}

}  // namespace scale_bench
