// Windows-only watcher tests (run under wine by scripts/test-windows.sh).
#include <catch2/catch.hpp>

#include "support.hpp"

namespace raftsync::watch::test {

TEST_CASE(
    "a tiny ReadDirectoryChangesW buffer overflows; the burst ends in a rescan and nothing "
    "is lost",
    "[watch][overflow]") {
  temp_folder folder;
  fs::create_directories(folder / "burst");
  watch_options options = contract_options();
  options.rdcw_buffer_bytes = 64;  // room for one or two notifications
  auto made = make_watcher(backend::rdcw, options);
  REQUIRE(made.has_value());
  collector events;
  gate stall;
  REQUIRE(!made.value()->start(folder.path(), stall.wrap(events.sink())));
  consumer_model model(folder.path(), options.ignore);
  write_file(folder / "trigger", "t");
  REQUIRE(stall.wait_entered(10s));
  for (int i = 0; i < 300; ++i) {
    write_file(folder / "burst" / ("f" + std::to_string(i)), std::to_string(i));
  }
  stall.open();
  const bool converged = model.converge(events, 30s);
  INFO(model.difference());
  CHECK(converged);
  made.value()->stop();
  events.close();
  const auto all = events.all();
  CHECK(std::any_of(all.begin(), all.end(), [](const fs_event& e) {
    return e.effect == fs_effect::rescan_required && e.scope == rescan_scope::everything;
  }));
}

}  // namespace raftsync::watch::test
