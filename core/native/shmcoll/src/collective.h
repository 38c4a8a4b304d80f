// shoal shared-segment collective (same-host allreduce / broadcast / barrier): shared declarations.
//
// One POSIX shared-memory segment mapped by all P ranks of a group on one host (DeepSpeed's and oneCCL's CPU
// shm allreduce). Layout:
//
//   [header 4 KiB: magic, size, nbuf, chunk bytes, attach count, abort word, waiter count, pid of every rank]
//   [counters: per rank three u32 words, each on its own cache line: in, red, out]
//   [descriptors: per rank and buffer one 64-byte op descriptor (op sequence, kind, dtype, op, root, count)]
//   [data: per rank `nbuf` slots of `chunk` bytes, then `nbuf` result buffers of `chunk` bytes]
//
// A collective moves its payload in chunks numbered globally (every rank numbers the same way); chunk g uses
// buffer b = g % nbuf. For each chunk a rank: (1) waits until every rank has copied out chunk g - nbuf (the
// buffers are free), writes its descriptor and copies its chunk into its slot except its own slice (nobody else
// reads that), publishes in = g + 1; (2) copies out the previous chunk once every rank has published red >= g,
// publishes out = g; (3) waits until every rank published in >= g + 1, checks that every descriptor equals its
// own, reduces ITS slice of the chunk over the P contributions in rank order (its own straight from its data)
// into the result buffer, writes the slice back into its data and publishes red = g + 1. After the last chunk it
// copies that one out (all but its own slice, already in place). Every element is reduced once, by one rank, in rank order: all ranks get bitwise the same result,
// independent of timing. Counters only grow (compared modulo 2^32).
//
// Waits: spin (pause) for a while, then sleep on the lagging rank's counter word (a shared futex) in 5 ms slices;
// publishers wake only when the waiter count is non-zero (store word, load waiters / add waiters, load word, all
// sequentially consistent: one of the two sees the other). Each slice checks the abort word (set by close() and
// by a rank that failed), the deadline (ERR_TIMEOUT names the missing ranks) and whether the peers' processes
// are alive (kill(pid, 0)).
//
// Threads: an op may run on the JS thread for a bounded spin budget (small payloads: no thread hop); if it is
// not finished by then it continues on this object's own worker thread (not the libuv pool, which ranks that are
// threads of one process could exhaust), which reports completion through a thread-safe function.
//
// Files: this header (the segment's layout, `Segment`, `Op`); pipeline.cc the chunk pipeline (waits, copy in/out,
// reductions: plain C++, its hot loops in one translation unit with internal linkage, so they inline as they did
// when everything was one file); collective.cc the N-API `Collective` (create/attach the segment, the worker
// thread, start/abort/close).
#pragma once

#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <string>

namespace shoal_shmcoll {

constexpr uint32_t kMagic = 0x4c4f4343;  // "CCOL"
constexpr uint32_t kVersion = 1;
constexpr uint32_t kMaxRanks = 256;
constexpr size_t kHeaderSize = 4096;
constexpr size_t kPidsOff = 256;
constexpr size_t kLine = 64;
constexpr int kSliceMs = 5;

enum Dtype { F32 = 0, F64 = 1, I32 = 2, U8 = 3 };
enum Kind { ALLREDUCE = 0, BROADCAST = 1 };
enum RedOp { SUM = 0, MIN = 1, MAX = 2, MEAN = 3 };
enum Ctr { IN = 0, RED = 1, OUT = 2 };

struct Header {
  uint32_t magic;
  uint32_t version;
  uint32_t size;
  uint32_t nbuf;
  uint32_t chunkBytes;
  uint32_t attached;
  uint32_t abortWord;    // 0, or 1 + the rank that aborted
  uint32_t abortReason;  // 1 closed, 2 timed out, 3 saw a dead peer, 4 error
  uint32_t waiters;
};

struct Desc {
  uint32_t opSeq;
  uint8_t kind, dtype, op, pad;
  uint32_t root;
  uint32_t pad2;
  uint64_t count;
};

inline uint32_t ld(const uint32_t* p) { return __atomic_load_n(p, __ATOMIC_SEQ_CST); }
inline uint32_t ldAcq(const uint32_t* p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
inline void st(uint32_t* p, uint32_t v) { __atomic_store_n(p, v, __ATOMIC_SEQ_CST); }
inline void futexWake(uint32_t* addr) { syscall(SYS_futex, addr, FUTEX_WAKE, INT32_MAX, nullptr, nullptr, 0); }
inline uint64_t nowNs() {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}
inline bool reached(uint32_t v, uint32_t target) { return (int32_t)(v - target) >= 0; }

inline size_t esizeOf(int dt) { return dt == F64 ? 8 : dt == U8 ? 1 : 4; }
inline const char* kindName(int k) { return k == BROADCAST ? "broadcast" : "allreduce"; }
inline const char* dtypeName(int d) { return d == F32 ? "float32" : d == F64 ? "float64" : d == I32 ? "int32" : "uint8"; }
inline const char* opName(int o) { return o == SUM ? "sum" : o == MIN ? "min" : o == MAX ? "max" : "mean"; }

struct Op {
  int kind = ALLREDUCE, dtype = F32, op = SUM;
  uint32_t root = 0;
  uint8_t* data = nullptr;
  uint64_t count = 0;
  size_t esize = 4;
  uint64_t chunkElems = 0;
  uint32_t first = 0;  // global index of the op's first chunk
  uint32_t nChunks = 1;
  uint32_t k = 0;      // chunk being worked on (relative)
  int phase = 0;
  bool mismatch = false;
  uint32_t opSeq = 0;
  uint64_t deadline = 0;
  uint64_t timeoutMs = 0;
  uint64_t spinNs = 0;
  std::string errCode, errMsg;
};

// One rank's view of the mapped segment: where everything is, and the group state the pipeline keeps across ops.
// Plain C++; owned by the N-API Collective (collective.cc), which maps and unmaps it.
struct Segment {
  uint32_t rank = 0, size = 1;
  uint8_t* base = nullptr;
  Header* hdr = nullptr;
  size_t bytes = 0, ctrOff = 0, descOff = 0, dataOff = 0;
  uint32_t chunk = 0, nbuf = 0;
  int32_t pid = 0;
  uint32_t next = 0;                 // global index of the next op's first chunk
  std::atomic<bool> closing{false};  // set on the JS thread, read by the worker thread

  void layout(uint32_t P, uint32_t chunk, uint32_t nbuf) {
    this->chunk = chunk;
    this->nbuf = nbuf;
    ctrOff = kHeaderSize;
    descOff = ctrOff + (size_t)P * 3 * kLine;
    dataOff = (descOff + (size_t)P * nbuf * kLine + 4095) & ~(size_t)4095;
    bytes = dataOff + (size_t)(P + 1) * nbuf * chunk;
  }
  int32_t* pids() { return (int32_t*)(base + kPidsOff); }
  uint32_t* ctr(uint32_t r, int which) { return (uint32_t*)(base + ctrOff + ((size_t)r * 3 + which) * kLine); }
  Desc* desc(uint32_t r, uint32_t b) { return (Desc*)(base + descOff + ((size_t)r * nbuf + b) * kLine); }
  uint8_t* slot(uint32_t r, uint32_t b) { return base + dataOff + ((size_t)r * nbuf + b) * chunk; }
  uint8_t* result(uint32_t b) { return base + dataOff + ((size_t)size * nbuf + b) * chunk; }

  // Set the abort word (the first caller's reason wins) and wake every waiter. Any thread.
  void setAbort(uint32_t reason) {
    uint32_t zero = 0;
    __atomic_compare_exchange_n(&hdr->abortWord, &zero, rank + 1, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
    if (zero == 0) st(&hdr->abortReason, reason);
    for (uint32_t r = 0; r < size; r++)
      for (int w = 0; w < 3; w++) futexWake(ctr(r, w));
  }
};

// pipeline.cc: advance `op` as far as possible. 0 done (errCode may be set), 1 not finished (non-blocking only:
// the spin budget up to `spinUntil` ran out).
int runOp(Segment& seg, Op& op, bool blocking, uint64_t spinUntil);

}  // namespace shoal_shmcoll
