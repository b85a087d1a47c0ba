// raftsync — everything in one include: the replicated folder facade and the modules under it.
#pragma once

#include "raftsync/error.hpp"
#include "raftsync/result.hpp"
#include "raftsync/version.hpp"

#include "raftsync/raft/memory_storage.hpp"
#include "raftsync/raft/raw_node.hpp"

#include "raftsync/replicated_folder.hpp"
