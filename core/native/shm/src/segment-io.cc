// The shared-memory Segment's data path: send (inline or through the writer thread), take, readInto, arm, spin,
// alloc (segment.h).
#include "segment.h"

#include <string.h>
#include <time.h>

namespace shoal_shm {

// send(u8, id): returns true when copied synchronously; otherwise completion arrives as kSendDone/kSendFailed.
Napi::Value Segment::Send(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Uint8Array a = info[0].As<Napi::Uint8Array>();
  double id = info[1].As<Napi::Number>().DoubleValue();
  {
    std::lock_guard<std::mutex> lk(mu_);
    // Fast path: idle writer, room in the ring for the whole frame: copy it now on this thread, publish once.
    if (hdr_ && queue_.empty() && !writerBusy_ && !stopping_.load() && a.ByteLength() <= kDirectMax) {
      Ring& r = hdr_->ring[side_];
      uint8_t* data = base_ + kHeaderSize + static_cast<size_t>(side_) * cap_;
      if (!load(&hdr_->ring[1 - side_].closed) && ringPutFrame(r, data, cap_, a.Data(), a.ByteLength())) {
        NotifyData(r);
        return Napi::Boolean::New(env, true);
      }
    }
    queue_.push_back(SendJob{id, a.Data(), a.ByteLength()});
  }
  cv_.notify_one();
  return Napi::Boolean::New(env, false);
}

// The producer never gets more than the ring's capacity ahead of the consumer: indices that say otherwise were
// written by something else than the pair's two ends (a corrupt or scribbled segment). Without this check a
// consumer would take messages out of garbage for ever (the fuzzer of issue #15 found zero-length "messages"
// growing the heap until V8 aborted). ERR_BAD_FRAME fails the connection instead.
Napi::Value Segment::ThrowCorrupt(Napi::Env env, uint64_t h, uint64_t t) {
  Napi::Error err = Napi::Error::New(env, "ring indices are corrupt (" + std::to_string(h - t) + " bytes pending in a ring of " +
                                              std::to_string(cap_) + ")");
  err.Set("code", Napi::String::New(env, "ERR_BAD_FRAME"));
  err.ThrowAsJavaScriptException();
  return env.Undefined();
}

// take(smallMax): the next message on the JS thread.
//  - a Uint8Array: a whole message of <= smallMax bytes was in the ring and is now consumed;
//  - a number >= 0: the header of a larger message was consumed; fetch its body with readInto;
//  - -1: no (whole small) message yet; -2: the connection is closed.
// Throws (code ERR_BAD_FRAME) on a length above maxMessage. Must not be called while a body is pending.
Napi::Value Segment::Take(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Ring* rp = InRing();
  if (!rp) return Napi::Number::New(env, -2);
  Ring& r = *rp;
  uint64_t smallMax = static_cast<uint64_t>(info[0].As<Napi::Number>().DoubleValue());
  if (smallMax > cap_ - sizeof(uint64_t)) smallMax = cap_ - sizeof(uint64_t);
  uint64_t h = load(&r.head);
  lastHead_ = h;
  uint64_t t = r.tail;
  if (h - t > cap_) return ThrowCorrupt(env, h, t);
  if (h - t < sizeof(uint64_t)) return Napi::Number::New(env, -1);
  uint8_t* data = InData();
  uint64_t len = 0;
  CopyOut(data, t, reinterpret_cast<uint8_t*>(&len), sizeof(len));
  if (len > maxMessage_) {
    Napi::Error err = Napi::Error::New(env, "message of " + std::to_string(len) + " bytes exceeds the limit of " +
                                                std::to_string(maxMessage_));
    err.Set("code", Napi::String::New(env, "ERR_BAD_FRAME"));
    err.ThrowAsJavaScriptException();
    return env.Undefined();
  }
  if (len <= smallMax) {
    if (h - t < sizeof(uint64_t) + len) return Napi::Number::New(env, -1);
    Napi::ArrayBuffer ab = Napi::ArrayBuffer::New(env, static_cast<size_t>(len));
    if (len) CopyOut(data, t + sizeof(uint64_t), static_cast<uint8_t*>(ab.Data()), static_cast<size_t>(len));
    ringConsumerAdvance(r, t + sizeof(uint64_t) + len);
    return Napi::Uint8Array::New(env, static_cast<size_t>(len), ab, 0);
  }
  ringConsumerAdvance(r, t + sizeof(uint64_t));
  return Napi::Number::New(env, static_cast<double>(len));
}

// readInto(u8, offset): copy the bytes of the pending body that are in the ring to u8[offset..]; returns the
// count (0 when nothing new arrived). The caller tracks how many the body still needs (u8.length - offset).
Napi::Value Segment::ReadInto(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Ring* rp = InRing();
  if (!rp) return Napi::Number::New(env, 0);
  Ring& r = *rp;
  Napi::Uint8Array a = info[0].As<Napi::Uint8Array>();
  size_t off = static_cast<size_t>(info[1].As<Napi::Number>().DoubleValue());
  size_t want = a.ByteLength() > off ? a.ByteLength() - off : 0;
  uint8_t* data = InData();
  size_t got = 0;
  uint64_t t = r.tail;
  while (got < want) {
    uint64_t h = load(&r.head);
    lastHead_ = h;
    if (h == t) break;
    if (h - t > cap_) return ThrowCorrupt(env, h, t);
    size_t chunk = static_cast<size_t>(h - t);
    if (chunk > want - got) chunk = want - got;
    if (chunk > kPublishChunk) chunk = kPublishChunk;
    CopyOut(data, t, a.Data() + off + got, chunk);
    got += chunk;
    t += chunk;
    ringConsumerAdvance(r, t);
  }
  return Napi::Number::New(env, static_cast<double>(got));
}

// arm(): announce that this side waits for data (the producer will write a wake byte). Returns true when
// bytes arrived since the last take/readInto looked, so the caller must look again before sleeping.
Napi::Value Segment::Arm(const Napi::CallbackInfo& info) {
  Ring* rp = InRing();
  if (!rp) return Napi::Boolean::New(info.Env(), false);
  store(&rp->dataWaiters, 1u);
  return Napi::Boolean::New(info.Env(), load(&rp->head) != lastHead_);
}

// spin(micros): busy-wait on the JS thread up to `micros` for bytes beyond what was last seen. Returns true
// when some arrived. Only worth it when both ranks have a core to themselves.
Napi::Value Segment::Spin(const Napi::CallbackInfo& info) {
  Ring* rp = InRing();
  double us = info[0].As<Napi::Number>().DoubleValue();
  if (!rp) return Napi::Boolean::New(info.Env(), false);
  timespec t0;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  for (uint32_t i = 0;; i++) {
    if (load(&rp->head) != lastHead_) return Napi::Boolean::New(info.Env(), true);
    if ((i & 63) == 0) {
      timespec now;
      clock_gettime(CLOCK_MONOTONIC, &now);
      if ((now.tv_sec - t0.tv_sec) * 1e6 + (now.tv_nsec - t0.tv_nsec) / 1e3 >= us) break;
    }
    cpuRelax();
  }
  return Napi::Boolean::New(info.Env(), false);
}

// alloc(bytes): an uninitialised receive buffer from this connection's pool (recycled from a collected earlier
// message of the same size when possible; otherwise freshly mapped). It goes back to the pool when collected.
Napi::Value Segment::Alloc(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  size_t n = static_cast<size_t>(info[0].As<Napi::Number>().DoubleValue());
  if (n == 0) return Napi::Uint8Array::New(env, 0);
  uint8_t* p = pool_->Get(n);
  if (!p) {
    Napi::Error::New(env, "out of memory for a " + std::to_string(n) + "-byte message").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  auto* hint = new PooledBuffer{pool_, n};
  Napi::ArrayBuffer ab = Napi::ArrayBuffer::New(
      env, p, n, [](Napi::Env, void* q, PooledBuffer* h) {
        h->pool->Put(static_cast<uint8_t*>(q), h->len);
        delete h;
      },
      hint);
  return Napi::Uint8Array::New(env, n, ab, 0);
}

void Segment::Emit(Event* ev) {
  napi_status st = tsfn_.BlockingCall(ev, [](Napi::Env env, Napi::Function cb, Event* e) {
    if (env == nullptr || cb.IsEmpty()) {  // environment teardown: drop the event
      delete e;
      return;
    }
    Napi::Value err = e->error.empty() ? env.Undefined() : Napi::String::New(env, e->error);
    Napi::Value code = e->code.empty() ? env.Undefined() : Napi::String::New(env, e->code);
    napi_value argv[4] = {Napi::Number::New(env, e->kind), Napi::Number::New(env, e->id), err, code};
    napi_value result;
    // Raw call: during shutdown JS may not run; ignore the status instead of aborting the process.
    napi_call_function(env, env.Undefined(), cb, 4, argv, &result);
    delete e;
  });
  if (st != napi_ok) delete ev;
}

// Wait until the ring has free space (head - tail < cap).
bool Segment::WaitSpace(Ring& r, uint64_t head, std::string& code, std::string& reason) {
  Ring& peerRing = hdr_->ring[1 - side_];
  for (int i = 0; i < spin_; i++) {
    if (head - load(&r.tail) < cap_) return true;
    cpuRelax();
  }
  for (;;) {
    if (stopping_.load()) {
      code = "ERR_CLOSED";
      reason = "connection closed";
      return false;
    }
    uint32_t seq = load(&r.spaceSeq);
    add(&r.spaceWaiters, 1u);
    if (head - load(&r.tail) < cap_) {
      add(&r.spaceWaiters, static_cast<uint32_t>(-1));
      return true;
    }
    if (load(&peerRing.closed)) {
      add(&r.spaceWaiters, static_cast<uint32_t>(-1));
      code = "ERR_PEER_CLOSED";
      reason = "peer closed the shared-memory connection";
      return false;
    }
    futexWait(&r.spaceSeq, seq, kWaitSliceMs);
    add(&r.spaceWaiters, static_cast<uint32_t>(-1));
    if (head - load(&r.tail) < cap_) return true;
    if (PeerDead()) {
      code = "ERR_PEER_CLOSED";
      reason = "peer process " + std::to_string(load(&hdr_->pid[1 - side_])) + " is gone";
      return false;
    }
  }
}

bool Segment::WriteBytes(Ring& r, uint8_t* ringData, const uint8_t* src, size_t n, std::string& code, std::string& reason) {
  size_t put = 0;
  uint64_t h = r.head;
  while (put < n) {
    if (stopping_.load()) {
      code = "ERR_CLOSED";
      reason = "connection closed during a send";
      return false;
    }
    uint64_t used = h - load(&r.tail);
    if (used >= cap_) {
      if (!WaitSpace(r, h, code, reason)) return false;
      continue;
    }
    size_t chunk = static_cast<size_t>(cap_ - used);
    if (chunk > n - put) chunk = n - put;
    if (chunk > kPublishChunk) chunk = kPublishChunk;
    CopyIn(ringData, h, src + put, chunk);
    put += chunk;
    h += chunk;
    store(&r.head, h);
    NotifyData(r);
  }
  return true;
}

void Segment::SetIdle() {
  std::lock_guard<std::mutex> lk(mu_);
  writerBusy_ = false;
}

void Segment::WriterLoop() {
  Ring& r = hdr_->ring[side_];
  uint8_t* data = base_ + kHeaderSize + static_cast<size_t>(side_) * cap_;
  std::string code, reason;
  bool broken = false;
  for (;;) {
    SendJob job;
    {
      std::unique_lock<std::mutex> lk(mu_);
      cv_.wait(lk, [this] { return stopping_.load() || !queue_.empty(); });
      if (queue_.empty()) break;  // stopping
      job = queue_.front();
      queue_.pop_front();
      writerBusy_ = true;
    }
    if (!broken) {
      uint64_t len = job.len;
      if (WriteBytes(r, data, reinterpret_cast<uint8_t*>(&len), sizeof(len), code, reason) &&
          WriteBytes(r, data, job.data, job.len, code, reason)) {
        SetIdle();
        Emit(new Event{kSendDone, job.id, "", ""});
        continue;
      }
      broken = true;
    }
    SetIdle();
    Emit(new Event{kSendFailed, job.id, reason, code});
  }
  std::lock_guard<std::mutex> lk(mu_);
  for (const SendJob& job : queue_) {
    Emit(new Event{kSendFailed, job.id, "connection closed", "ERR_CLOSED"});
  }
  queue_.clear();
}

}  // namespace shoal_shm
