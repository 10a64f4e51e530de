// io_uring through liburing (Debian's liburing-dev), for HostSys's
// asynchronous disk I/O. Linked by the CShim target (-luring).
#ifndef SWIFTVMM_CSHIM_URING_H
#define SWIFTVMM_CSHIM_URING_H

#include <liburing.h>

// An sqe flag defined through an enum Swift cannot import as a macro.
static const unsigned char SHIM_IOSQE_IO_DRAIN = IOSQE_IO_DRAIN;

#endif
