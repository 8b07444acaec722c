// heap.hpp: how much heap the test process holds now, for tests of memory bounds.
// Shared by the test binaries of libmailnet and the components (header-only).
#pragma once

#include <malloc.h>

#include <cstddef>

#if defined(__SANITIZE_ADDRESS__)
// From ASan's runtime (g++ 12 ships no allocator_interface.h).
extern "C" std::size_t __sanitizer_get_current_allocated_bytes();
#endif

namespace mailnet::testing {

/// Octets of heap in use now. Under ASan its allocator is asked (freed blocks sit in its
/// quarantine, so the RSS says nothing about what the program holds).
inline std::size_t heap_in_use() {
#if defined(__SANITIZE_ADDRESS__)
    return __sanitizer_get_current_allocated_bytes();
#else
    const auto m = mallinfo2();
    return m.uordblks + m.hblkhd;
#endif
}

}  // namespace mailnet::testing
