// raftsync — library version. CMakeLists.txt reads the project version from this file.
#pragma once

#define RAFTSYNC_VERSION_MAJOR 0
#define RAFTSYNC_VERSION_MINOR 1
#define RAFTSYNC_VERSION_PATCH 0
#define RAFTSYNC_VERSION_STRING "0.1.0"
