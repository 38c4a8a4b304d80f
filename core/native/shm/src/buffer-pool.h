// Receive buffers of the shared-memory pair transport (plain C++, no N-API).
#pragma once

#include <sys/mman.h>

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>

namespace shoal_shm {

// Receive buffers for large messages, recycled: a buffer comes back here when JS collects its ArrayBuffer, and the
// next message of the same size reuses it instead of mapping (and page-faulting, zeroing) fresh memory. Shared by
// a connection and every buffer it handed out (shared_ptr), so buffers may outlive the connection. Thread-safe
// (finalizers run on the JS thread, but an environment teardown may not).
class BufferPool {
 public:
  explicit BufferPool(size_t capBytes) : cap_(capBytes) {}
  ~BufferPool() {
    for (auto& kv : free_) Release(kv.second, kv.first);
  }
  uint8_t* Get(size_t n) {
    {
      std::lock_guard<std::mutex> lk(mu_);
      auto it = free_.find(n);
      if (it != free_.end()) {
        uint8_t* p = it->second;
        free_.erase(it);
        freeBytes_ -= n;
        return p;
      }
    }
    // Below the huge-page size, populate at once: one kernel pass instead of a fault per 4 KiB page.
    int populate = n < (4u << 20) ? MAP_POPULATE : 0;
    void* p = mmap(nullptr, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | populate, -1, 0);
    if (p == MAP_FAILED) return nullptr;
    // Transparent huge pages where the system allows them on request: a fresh buffer then faults in 2 MiB at a
    // time instead of 4 KiB (hundreds of times fewer faults; the kernel still zeroes it).
    if (n >= (4u << 20)) madvise(p, n, MADV_HUGEPAGE);
    return static_cast<uint8_t*>(p);
  }
  void Put(uint8_t* p, size_t n) {
    {
      std::lock_guard<std::mutex> lk(mu_);
      if (!closed_ && freeBytes_ + n <= cap_) {
        free_.emplace(n, p);
        freeBytes_ += n;
        return;
      }
    }
    Release(p, n);
  }
  // The connection closed: keep nothing idle from now on.
  void Drain() {
    std::multimap<size_t, uint8_t*> old;
    {
      std::lock_guard<std::mutex> lk(mu_);
      closed_ = true;
      old.swap(free_);
      freeBytes_ = 0;
    }
    for (auto& kv : old) Release(kv.second, kv.first);
  }

 private:
  static void Release(uint8_t* p, size_t n) { munmap(p, n); }
  std::mutex mu_;
  std::multimap<size_t, uint8_t*> free_;
  size_t freeBytes_ = 0;
  size_t cap_;
  bool closed_ = false;
};

struct PooledBuffer {
  std::shared_ptr<BufferPool> pool;
  size_t len;
};

}  // namespace shoal_shm
