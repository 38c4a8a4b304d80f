// The SPSC ring's out-of-line parts: futex waits and the one-shot frame write (see ring.h).
#include "ring.h"

#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <climits>

namespace shoal_shm {

void futexWait(uint32_t* addr, uint32_t val, int ms) {
  timespec ts{ms / 1000, (ms % 1000) * 1000000L};
  syscall(SYS_futex, addr, FUTEX_WAIT, val, &ts, nullptr, 0);
}

void futexWake(uint32_t* addr) { syscall(SYS_futex, addr, FUTEX_WAKE, INT32_MAX, nullptr, nullptr, 0); }

bool ringPutFrame(Ring& r, uint8_t* ringData, uint64_t cap, const uint8_t* src, uint64_t len) {
  uint64_t need = len + sizeof(uint64_t);
  uint64_t h = r.head;
  if (cap - (h - load(&r.tail)) < need) return false;
  ringCopyIn(ringData, cap, h, reinterpret_cast<const uint8_t*>(&len), sizeof(len));
  ringCopyIn(ringData, cap, h + sizeof(len), src, static_cast<size_t>(len));
  store(&r.head, h + need);
  return true;
}

}  // namespace shoal_shm
