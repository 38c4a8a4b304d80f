// shoal shared-memory pair transport: the segment layout and its single-producer/single-consumer byte rings.
//
// Plain C++ (no N-API, no libuv), so it can be tested on its own (core/native/shm/test/ring-test.cc).
//
// A segment holds a header and two rings, one per direction. `head` counts the bytes produced so far (written only
// by the producer), `tail` the bytes consumed (written only by the consumer); both grow without wrapping and a
// byte at position p lives at data[p & (capacity - 1)]. Messages are framed as [u64 length][bytes] and may be
// larger than the ring: they stream through it in chunks. A producer out of space sleeps on the `spaceSeq` futex
// word, which the consumer bumps after every advance of `tail`.
//
// Ordering: the consumer stores dataWaiters = 1 and then loads head; the producer stores head and then
// exchanges dataWaiters with 0 (all sequentially consistent), so at least one of them sees the other: either
// the consumer sees the new head, or the producer sees the armed word and wakes it (wake.h).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

namespace shoal_shm {

constexpr uint32_t kMagic = 0x4c4f4853;  // "SHOL"
constexpr uint32_t kVersion = 2;
constexpr size_t kHeaderSize = 4096;
constexpr size_t kPublishChunk = 1 << 20;  // producer/consumer publish progress at least this often

struct alignas(64) Ring {
  uint64_t head;  // bytes produced so far (written only by the producer)
  char pad0[56];
  uint64_t tail;  // bytes consumed so far (written only by the consumer)
  char pad1[56];
  uint32_t dataSeq;      // unused since version 2 (kept for layout)
  uint32_t spaceSeq;     // futex word: bumped after tail advances
  uint32_t dataWaiters;  // consumer is armed: the producer writes a wake byte to the socket
  uint32_t spaceWaiters; // producer is (about to be) asleep on spaceSeq
  uint32_t closed;       // producer side closed
  char pad2[44];
};

struct SegHeader {
  uint32_t magic;
  uint32_t version;
  uint64_t capacity;  // bytes per ring, power of two
  int32_t pid[2];     // [0] listener, [1] dialer
  uint32_t attached;  // 0 until a dialer claims the segment
  uint32_t pad;
  Ring ring[2];  // ring[s] is written by side s and read by side 1 - s
};
static_assert(sizeof(SegHeader) <= kHeaderSize, "segment header too large");

template <typename T> inline T load(T* p) { return __atomic_load_n(p, __ATOMIC_SEQ_CST); }
template <typename T> inline void store(T* p, T v) { __atomic_store_n(p, v, __ATOMIC_SEQ_CST); }
template <typename T> inline T add(T* p, T v) { return __atomic_add_fetch(p, v, __ATOMIC_SEQ_CST); }

// Sleep on the futex word `addr` while it holds `val`, at most `ms` milliseconds.
void futexWait(uint32_t* addr, uint32_t val, int ms);
// Wake every thread (of any process) asleep on `addr`.
void futexWake(uint32_t* addr);

inline void cpuRelax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

// Copy n bytes from src into the ring's data at stream position pos (wrapping at cap, a power of two).
inline void ringCopyIn(uint8_t* ringData, uint64_t cap, uint64_t pos, const uint8_t* src, size_t n) {
  uint64_t off = pos & (cap - 1);
  size_t first = n < cap - off ? n : static_cast<size_t>(cap - off);
  memcpy(ringData + off, src, first);
  if (first < n) memcpy(ringData, src + first, n - first);
}

// Copy n bytes at stream position pos out of the ring's data into dst.
inline void ringCopyOut(const uint8_t* ringData, uint64_t cap, uint64_t pos, uint8_t* dst, size_t n) {
  uint64_t off = pos & (cap - 1);
  size_t first = n < cap - off ? n : static_cast<size_t>(cap - off);
  memcpy(dst, ringData + off, first);
  if (first < n) memcpy(dst + first, ringData, n - first);
}

// Consumer: publish tail = t and wake a producer waiting for space.
inline void ringConsumerAdvance(Ring& r, uint64_t t) {
  store(&r.tail, t);
  add(&r.spaceSeq, 1u);
  if (load(&r.spaceWaiters)) futexWake(&r.spaceSeq);
}

// Producer: when the ring has room for the whole frame [u64 len][src], copy it in and publish head once; returns
// false (and writes nothing) otherwise. The caller then wakes the consumer if it is armed.
bool ringPutFrame(Ring& r, uint8_t* ringData, uint64_t cap, const uint8_t* src, uint64_t len);

}  // namespace shoal_shm
