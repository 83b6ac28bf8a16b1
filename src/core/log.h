// Minimal leveled logging to stderr. Level from CHIMERA_LOG (error|warn|info|debug), default warn.
#pragma once

#include "core/status.h"

namespace chimera {

enum class LogLevel { kError = 0, kWarn = 1, kInfo = 2, kDebug = 3 };

LogLevel log_level();
void set_log_level(LogLevel level);
void log_message(LogLevel level, const std::string& msg);

template <typename... Args>
void log(LogLevel level, const Args&... args) {
  if (level <= log_level()) log_message(level, StrCat(args...));
}

}  // namespace chimera
