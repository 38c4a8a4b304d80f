// The shared-segment collective's chunk pipeline (collective.h): waits on the other ranks' counters, copy in,
// the reduction of this rank's slice, copy out, and the state machine that runs an op through its chunks. Plain
// C++ over the mapped segment (no N-API). Everything but runOp has internal linkage and is declared inline, as
// the members of the single-file version were, so the hot loops inline as before.
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <string.h>

#include "collective.h"
#include "shoal_reduce.h"
#ifdef SHOAL_X86
#include <immintrin.h>
#endif

#include <cstdint>
#include <string>

// ---- kernels: the shared reduction loops (core/native/include/shoal_reduce.h) plus int32 mean ----
void shoal_coll_div_i32(int32_t* d, int32_t p, size_t n) {
  for (size_t i = 0; i < n; i++) d[i] = d[i] / p;  // truncates toward zero (like Math.trunc)
}

namespace shoal_shmcoll {

namespace {

inline void futexWait(uint32_t* addr, uint32_t val, int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  syscall(SYS_futex, addr, FUTEX_WAIT, val, &ts, nullptr, 0);
}
inline void cpuRelax() {
#ifdef SHOAL_X86
  _mm_pause();
#endif
}

inline void publish(Segment& seg, int which, uint32_t v) {
  uint32_t* w = seg.ctr(seg.rank, which);
  st(w, v);
  if (ld(&seg.hdr->waiters) != 0) futexWake(w);
}

inline std::string missing(Segment& seg, int which, uint32_t target) {
  std::string s;
  for (uint32_t q = 0; q < seg.size; q++)
    if (!reached(ldAcq(seg.ctr(q, which)), target)) s += (s.empty() ? "" : ", ") + std::to_string(q);
  return s;
}

inline std::string opLabel(Segment& seg, const Op& op) {
  return std::string("shm-collective ") + kindName(op.kind) + " (op #" + std::to_string(op.opSeq) + ", rank " + std::to_string(seg.rank) + " of " +
         std::to_string(seg.size) + ")";
}

// 0: condition met; 1: not yet (non-blocking budget spent); -1: failed (op.errCode set).
inline int waitAll(Segment& seg, Op& op, int which, uint32_t target, bool blocking, uint64_t spinUntil) {
  uint32_t q = 0;
  uint64_t iter = 0;
  uint64_t nextPidCheck = 0;
  bool sleeping = false;
  uint32_t spins = 0;
  for (;;) {
    while (q < seg.size && reached(ldAcq(seg.ctr(q, which)), target)) q++;
    if (q == seg.size) return 0;
    uint32_t ab = ld(&seg.hdr->abortWord);
    if (ab != 0) {
      uint32_t who = ab - 1, why = ld(&seg.hdr->abortReason);
      if (who == seg.rank && seg.closing) {
        op.errCode = "ERR_CLOSED";
        op.errMsg = opLabel(seg, op) + ": the collective was closed";
      } else {
        op.errCode = "ERR_PEER_CLOSED";
        op.errMsg = opLabel(seg, op) + ": rank " + std::to_string(who) +
                    (why == 1 ? " closed the group" : why == 2 ? " timed out" : why == 3 ? " saw a dead peer" : " failed") +
                    "; the shared-memory group is broken";
      }
      return -1;
    }
    if ((++iter & 63) != 0 && !sleeping) {
      cpuRelax();
      continue;
    }
    uint64_t t = nowNs();
    if (t >= op.deadline) {
      std::string m = missing(seg, which, target);
      op.errCode = "ERR_TIMEOUT";
      op.errMsg = opLabel(seg, op) + " waiting for rank(s) " + m + " (chunk " +
                  std::to_string(target) + ", stage " + (which == IN ? "copy-in" : which == RED ? "reduce" : "copy-out") + ")";
      seg.setAbort(2);
      return -1;
    }
    if (t >= nextPidCheck) {
      nextPidCheck = t + 2000000ull;
      for (uint32_t r = 0; r < seg.size; r++) {
        int32_t pid = __atomic_load_n(&seg.pids()[r], __ATOMIC_ACQUIRE);
        if (pid <= 0 || pid == seg.pid) continue;
        if (kill(pid, 0) != 0 && errno == ESRCH) {
          op.errCode = "ERR_PEER_CLOSED";
          op.errMsg = opLabel(seg, op) + ": rank " + std::to_string(r) + " (pid " + std::to_string(pid) + ") died; the shared-memory group is broken";
          seg.setAbort(3);
          return -1;
        }
      }
    }
    if (t < spinUntil) {
      // Past the first few microseconds, let another thread have the core (ranks may outnumber cores).
      if (++spins > 16) sched_yield();
      continue;
    }
    if (!blocking) return 1;
    sleeping = true;
    uint32_t* w = seg.ctr(q, which);
    uint32_t v = ld(w);
    if (reached(v, target)) continue;
    __atomic_fetch_add(&seg.hdr->waiters, 1, __ATOMIC_SEQ_CST);
    if (ld(w) == v && ld(&seg.hdr->abortWord) == 0) futexWait(w, v, kSliceMs);
    __atomic_fetch_sub(&seg.hdr->waiters, 1, __ATOMIC_SEQ_CST);
  }
}

inline uint64_t chunkLen(const Op& op, uint32_t k) {
  uint64_t s = (uint64_t)k * op.chunkElems;
  if (s >= op.count) return 0;
  uint64_t n = op.count - s;
  return n < op.chunkElems ? n : op.chunkElems;
}

// This rank's slice [s, s + len) of a chunk of n elements (64-byte aligned starts).
inline void sliceOf(Segment& seg, uint64_t n, uint32_t r, uint64_t& s, uint64_t& len) {
  uint64_t per = ((n + seg.size - 1) / seg.size + 15) & ~(uint64_t)15;
  s = (uint64_t)r * per;
  if (s > n) s = n;
  len = n - s < per ? n - s : per;
}

inline void copyIn(Segment& seg, Op& op, uint32_t g) {
  uint32_t b = g % seg.nbuf;
  Desc* d = seg.desc(seg.rank, b);
  d->opSeq = op.opSeq;
  d->kind = (uint8_t)op.kind;
  d->dtype = (uint8_t)op.dtype;
  d->op = (uint8_t)op.op;
  d->root = op.root;
  d->count = op.count;
  if (op.kind == BROADCAST && op.root != seg.rank) return;
  uint64_t n = chunkLen(op, op.k);
  uint8_t* src = op.data + (uint64_t)op.k * op.chunkElems * op.esize;
  if (op.kind == BROADCAST) {
    if (n) memcpy(seg.slot(seg.rank, b), src, n * op.esize);
    return;
  }
  // Only the other ranks' slices: nobody but this rank reads its own slice, which it takes from `data`.
  uint64_t s, len;
  sliceOf(seg, n, seg.rank, s, len);
  if (s) memcpy(seg.slot(seg.rank, b), src, s * op.esize);
  if (s + len < n) memcpy(seg.slot(seg.rank, b) + (s + len) * op.esize, src + (s + len) * op.esize, (n - s - len) * op.esize);
}

inline void copyOut(Segment& seg, Op& op, uint32_t k, uint32_t g) {
  if (op.mismatch) return;
  uint32_t b = g % seg.nbuf;
  uint64_t n = chunkLen(op, k);
  if (!n) return;
  uint8_t* dst = op.data + (uint64_t)k * op.chunkElems * op.esize;
  if (op.kind == BROADCAST) {
    if (op.root != seg.rank) memcpy(dst, seg.slot(op.root, b), n * op.esize);
    return;
  }
  // The own slice is already in `data` (written by reduceSlice).
  uint64_t s, len;
  sliceOf(seg, n, seg.rank, s, len);
  const uint8_t* src = seg.result(b);
  if (s) memcpy(dst, src, s * op.esize);
  if (s + len < n) memcpy(dst + (s + len) * op.esize, src + (s + len) * op.esize, (n - s - len) * op.esize);
}

inline bool checkDescs(Segment& seg, Op& op, uint32_t g) {
  uint32_t b = g % seg.nbuf;
  Desc* mine = seg.desc(seg.rank, b);
  for (uint32_t q = 0; q < seg.size; q++) {
    Desc* d = seg.desc(q, b);
    if (d->opSeq == mine->opSeq && d->kind == mine->kind && d->dtype == mine->dtype && d->op == mine->op && d->root == mine->root &&
        d->count == mine->count)
      continue;
    op.mismatch = true;
    op.errCode = "ERR_MISMATCH";
    auto show = [](Desc* x) {
      return std::string(kindName(x->kind)) + "(" + std::to_string(x->count) + " x " + dtypeName(x->dtype) + ", " +
             (x->kind == BROADCAST ? "root " + std::to_string(x->root) : std::string(opName(x->op))) + ", op #" + std::to_string(x->opSeq) + ")";
    };
    op.errMsg = "rank " + std::to_string(seg.rank) + " calls " + show(mine) + ", rank " + std::to_string(q) + " calls " + show(d);
    return false;
  }
  return true;
}

inline void reduceSlice(Segment& seg, Op& op, uint32_t g) {
  uint32_t b = g % seg.nbuf;
  uint64_t n = chunkLen(op, op.k);
  uint64_t s, len;
  sliceOf(seg, n, seg.rank, s, len);
  if (len == 0) return;
  size_t off = s * op.esize;
  uint8_t* mine = op.data + (uint64_t)op.k * op.chunkElems * op.esize + off;
  uint8_t* d = seg.result(b) + off;
  // Sources in rank order; this rank's own contribution comes straight from its data.
  auto src = [&](uint32_t q) -> const uint8_t* { return q == seg.rank ? mine : seg.slot(q, b) + off; };
  if (seg.size == 1) {
    memcpy(d, mine, len * op.esize);
  } else {
    int o = op.op == MEAN ? SUM : op.op;
#define RED3(T, NAME, OPN) shoal_##NAME##_##OPN##3((T*)d, (const T*)src(0), (const T*)src(1), len)
#define RED2(T, NAME, OPN, q) shoal_##NAME##_##OPN((T*)d, (const T*)src(q), len)
#define ALL(TS, NAMESUM, TM, NAMEMM)                                                    \
if (o == SUM) {                                                                       \
  RED3(TS, NAMESUM, sum);                                                             \
  for (uint32_t q = 2; q < seg.size; q++) RED2(TS, NAMESUM, sum, q);                     \
} else if (o == MIN) {                                                                \
  RED3(TM, NAMEMM, min);                                                              \
  for (uint32_t q = 2; q < seg.size; q++) RED2(TM, NAMEMM, min, q);                      \
} else {                                                                              \
  RED3(TM, NAMEMM, max);                                                              \
  for (uint32_t q = 2; q < seg.size; q++) RED2(TM, NAMEMM, max, q);                      \
}
    if (op.dtype == F32) {
      ALL(float, f32, float, f32)
    } else if (op.dtype == F64) {
      ALL(double, f64, double, f64)
    } else {
      ALL(uint32_t, u32, int32_t, i32)
    }
  }
  if (op.op == MEAN) {
    if (op.dtype == F32) shoal_scale_f32((float*)d, (float)(1.0 / seg.size), len);
    else if (op.dtype == F64) shoal_scale_f64((double*)d, 1.0 / seg.size, len);
    else shoal_coll_div_i32((int32_t*)d, (int32_t)seg.size, len);
  }
  memcpy(mine, d, len * op.esize);
}

}  // namespace

// Advance `op` as far as possible. 0 done (errCode may be set), 1 not finished (non-blocking only).
int runOp(Segment& seg, Op& op, bool blocking, uint64_t spinUntil) {
  for (;;) {
    uint32_t g = op.first + op.k;
    switch (op.phase) {
      case 0: {  // buffers of chunk g free (chunk g - nbuf copied out by every rank), then copy in
        int w = waitAll(seg, op, OUT, g - seg.nbuf + 1, blocking, spinUntil);  // modular: true for g < nbuf
        if (w == 1) return 1;
        if (w < 0) return 0;
        copyIn(seg, op, g);
        publish(seg, IN, g + 1);
        op.phase = 1;
        break;
      }
      case 1: {  // copy out the previous chunk of this op
        if (op.k > 0) {
          int w = waitAll(seg, op, RED, g, blocking, spinUntil);
          if (w == 1) return 1;
          if (w < 0) return 0;
          copyOut(seg, op, op.k - 1, g - 1);
          publish(seg, OUT, g);
        }
        op.phase = 2;
        break;
      }
      case 2: {  // everyone copied chunk g in: check descriptors, reduce my slice
        int w = waitAll(seg, op, IN, g + 1, blocking, spinUntil);
        if (w == 1) return 1;
        if (w < 0) return 0;
        if (checkDescs(seg, op, g) && op.kind == ALLREDUCE) reduceSlice(seg, op, g);
        publish(seg, RED, g + 1);
        if (op.mismatch || op.k + 1 == op.nChunks) {
          op.phase = 3;
        } else {
          op.k++;
          op.phase = 0;
        }
        break;
      }
      case 3: {  // the last chunk (or the chunk where a mismatch was found)
        int w = waitAll(seg, op, RED, g + 1, blocking, spinUntil);
        if (w == 1) return 1;
        if (w < 0) return 0;
        copyOut(seg, op, op.k, g);
        publish(seg, OUT, g + 1);
        seg.next = g + 1;  // every rank ends at the same chunk, also after a mismatch found in the first one
        op.phase = 4;
        return 0;
      }
      default:
        return 0;
    }
  }
}

}  // namespace shoal_shmcoll
