// raftsync node program — command-line parsing (kept apart from main.cpp so tests can drive it).
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "raftsync/replicated_folder.hpp"

namespace raftsync::tool {

enum class command_kind : std::uint8_t {
  run,
  status,
  flush,
  add_node,
  remove_node,
  transfer_leader,
  help,
  version
};

struct options {
  command_kind command = command_kind::run;
  replicated_folder_config config;
  std::filesystem::path secret_file;
  std::string log_level = "info";
  std::uint32_t flush_timeout_ms = 30000;
  bool flush_all = false;
  peer_address member;   // add-node / remove-node / transfer-leader: the node concerned
  bool learner = false;  // add-node --learner
};

// Parses argv. On error returns std::nullopt and puts a one-line reason in *error.
std::optional<options> parse_options(const std::vector<std::string>& args, std::string* error);

// "host:port" → (host, port). Accepts "[v6]:port".
bool parse_host_port(const std::string& text, std::string* host, std::uint16_t* port);

const char* usage_text();

}  // namespace raftsync::tool
