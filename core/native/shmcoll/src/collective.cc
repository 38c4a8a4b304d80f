// The shared-segment collective's N-API side (collective.h): the `Collective` class creates or attaches the
// segment, runs an op on the JS thread for its spin budget and then on its own worker thread, and reports
// completion through a thread-safe function.
#include <napi.h>

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>

#include "collective.h"

namespace shoal_shmcoll {

namespace {

class Coll : public Napi::ObjectWrap<Coll> {
 public:
  static Napi::Object Init(Napi::Env env, Napi::Object exports) {
    Napi::Function f = DefineClass(env, "Collective",
                                   {InstanceMethod("start", &Coll::Start), InstanceMethod("attached", &Coll::Attached),
                                    InstanceMethod("unlink", &Coll::Unlink), InstanceMethod("abort", &Coll::Abort),
                                    InstanceMethod("close", &Coll::Close), InstanceMethod("info", &Coll::Info),
                                    InstanceMethod("aborted", &Coll::Aborted)});
    exports.Set("Collective", f);
    return exports;
  }

  // new Collective(name, create, rank, size, chunkBytes, nbuf, onDone)
  Coll(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Coll>(info) {
    Napi::Env env = info.Env();
    name_ = info[0].As<Napi::String>().Utf8Value();
    bool create = info[1].As<Napi::Boolean>().Value();
    seg_.rank = info[2].As<Napi::Number>().Uint32Value();
    seg_.size = info[3].As<Napi::Number>().Uint32Value();
    uint32_t chunk = info[4].As<Napi::Number>().Uint32Value();
    uint32_t nbuf = info[5].As<Napi::Number>().Uint32Value();
    if (seg_.size < 1 || seg_.size > kMaxRanks || seg_.rank >= seg_.size) { throwErr(env, "ERR_INVALID", "bad rank/size"); return; }
    int fd = -1;
    if (create) {
      if (chunk < 4096 || chunk % 4096 != 0 || nbuf < 2 || nbuf > 16) { throwErr(env, "ERR_INVALID", "bad chunk/nbuf"); return; }
      fd = shm_open(name_.c_str(), O_CREAT | O_EXCL | O_RDWR, 0600);
      if (fd < 0) { throwErrno(env, "shm_open"); return; }
      seg_.layout(seg_.size, chunk, nbuf);
      if (ftruncate(fd, (off_t)seg_.bytes) != 0) {
        int e = errno;
        close(fd);
        shm_unlink(name_.c_str());
        errno = e;
        { throwErrno(env, "ftruncate"); return; }
      }
    } else {
      fd = shm_open(name_.c_str(), O_RDWR, 0600);
      if (fd < 0) { throwErrno(env, "shm_open"); return; }
      struct stat sb;
      if (fstat(fd, &sb) != 0 || (size_t)sb.st_size < kHeaderSize) {
        close(fd);
        { throwErr(env, "ENOTREADY", "segment not initialised yet"); return; }
      }
      seg_.bytes = (size_t)sb.st_size;
    }
    void* p = mmap(nullptr, seg_.bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (p == MAP_FAILED) {
      if (create) shm_unlink(name_.c_str());
      { throwErrno(env, "mmap"); return; }
    }
    seg_.base = (uint8_t*)p;
    seg_.hdr = (Header*)seg_.base;
    if (create) {
      seg_.hdr->size = seg_.size;
      seg_.hdr->nbuf = nbuf;
      seg_.hdr->chunkBytes = chunk;
      seg_.pids()[0] = (int32_t)getpid();
      seg_.hdr->attached = 1;
      seg_.hdr->version = kVersion;
      __atomic_store_n(&seg_.hdr->magic, kMagic, __ATOMIC_RELEASE);
    } else {
      if (__atomic_load_n(&seg_.hdr->magic, __ATOMIC_ACQUIRE) != kMagic) {
        munmap(seg_.base, seg_.bytes);
        seg_.base = nullptr;
        { throwErr(env, "ENOTREADY", "segment not initialised yet"); return; }
      }
      if (seg_.hdr->size != seg_.size) {
        munmap(seg_.base, seg_.bytes);
        seg_.base = nullptr;
        { throwErr(env, "ERR_MISMATCH", "segment was made for another group size"); return; }
      }
      seg_.layout(seg_.size, seg_.hdr->chunkBytes, seg_.hdr->nbuf);
      __atomic_store_n(&seg_.pids()[seg_.rank], (int32_t)getpid(), __ATOMIC_SEQ_CST);
      __atomic_fetch_add(&seg_.hdr->attached, 1, __ATOMIC_SEQ_CST);
    }
    seg_.pid = getpid();
    // The finalizer runs when Node tears the environment down (a worker thread terminated, the process exiting)
    // before close(): it stops this collective's thread there, so the thread never calls into a freed TSFN. After
    // a close() it only frees the guard (`owner` is cleared first).
    guard_ = new TsfnGuard{this};
    tsfn_ = Napi::ThreadSafeFunction::New(env, info[6].As<Napi::Function>(), "shoal-shmcoll", 0, 1, [](Napi::Env, TsfnGuard* g) {
      if (g->owner) g->owner->tsfnFinalized();
      delete g;
    }, guard_);
    tsfn_.Unref(env);
    hasTsfn_ = true;
    worker_ = std::thread([this] { loop(); });
  }

  ~Coll() { shutdown(); }

 private:
  void throwErr(Napi::Env env, const char* code, const std::string& msg) {
    Napi::Error e = Napi::Error::New(env, msg);
    e.Set("code", Napi::String::New(env, code));
    e.ThrowAsJavaScriptException();
  }
  void throwErrno(Napi::Env env, const char* what) {
    int e = errno;
    const char* code = e == ENOENT ? "ENOENT" : e == EEXIST ? "EEXIST" : "ERR_TRANSPORT";
    throwErr(env, code, std::string(what) + " " + name_ + ": " + strerror(e));
  }


  // ---- worker thread ----
  void loop() {
    std::unique_lock<std::mutex> lk(mu_);
    for (;;) {
      cv_.wait(lk, [this] { return pendingOp_ || stop_; });
      if (!pendingOp_) return;
      lk.unlock();
      Op* op = &op_;
      runOp(seg_, *op, true, nowNs() + op->spinNs);
      lk.lock();
      pendingOp_ = false;
      lk.unlock();
      // Once the environment is going away the call fails with napi_closing (the finalizer waits for this thread).
      if (!tsfnDead_.load()) tsfn_.BlockingCall(this, [](Napi::Env env, Napi::Function cb, Coll* self) { self->complete(env, cb); });
      lk.lock();
    }
  }

  void complete(Napi::Env env, Napi::Function cb) {
    tsfn_.Unref(env);
    dataRef_.Reset();
    busy_ = false;
    Napi::HandleScope scope(env);
    cb.Call({Napi::String::New(env, op_.errCode), Napi::String::New(env, op_.errMsg)});
  }

  // start(kind, dtype, op, data|null, count, root, opSeq, timeoutMs, syncSpinUs, threadSpinUs)
  //   -> 0 done, 1 pending (onDone(code, message) follows), or [code, message]
  Napi::Value Start(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!seg_.base || closed_) {
      throwErr(env, "ERR_CLOSED", "collective is closed");
      return env.Undefined();
    }
    if (busy_) {
      throwErr(env, "ERR_STATE", "one operation at a time");
      return env.Undefined();
    }
    Op& op = op_;
    op = Op();
    op.kind = info[0].As<Napi::Number>().Int32Value();
    op.dtype = info[1].As<Napi::Number>().Int32Value();
    op.op = info[2].As<Napi::Number>().Int32Value();
    op.esize = esizeOf(op.dtype);
    if (info[3].IsTypedArray()) {
      // The data pointer straight from the typed array: also right for a SharedArrayBuffer behind it (the C++
      // wrapper's ArrayBuffer() rejects those and would leave a null pointer with an exception pending).
      void* p = nullptr;
      size_t len = 0;
      if (napi_get_typedarray_info(env, info[3], nullptr, &len, &p, nullptr, nullptr) != napi_ok || (p == nullptr && len > 0)) {
        throwErr(env, "ERR_INVALID_ARG", "data: cannot read the typed array's memory");
        return env.Undefined();
      }
      op.data = (uint8_t*)p;
    }
    op.count = (uint64_t)info[4].As<Napi::Number>().Int64Value();
    op.root = info[5].As<Napi::Number>().Uint32Value();
    op.opSeq = info[6].As<Napi::Number>().Uint32Value();
    op.timeoutMs = (uint64_t)info[7].As<Napi::Number>().Int64Value();
    double syncSpinUs = info[8].As<Napi::Number>().DoubleValue();
    op.spinNs = (uint64_t)(info[9].As<Napi::Number>().DoubleValue() * 1000.0);
    op.chunkElems = seg_.chunk / op.esize;
    uint64_t nc = (op.count + op.chunkElems - 1) / op.chunkElems;
    op.nChunks = nc == 0 ? 1 : (uint32_t)nc;
    op.first = seg_.next;
    uint64_t t0 = nowNs();
    op.deadline = t0 + op.timeoutMs * 1000000ull;
    if (syncSpinUs > 0) {
      int r = runOp(seg_, op, false, t0 + (uint64_t)(syncSpinUs * 1000.0));
      if (r == 0) return result(env, op);
    }
    busy_ = true;
    dataRef_ = info[3].IsObject() ? Napi::Persistent(info[3]) : Napi::Reference<Napi::Value>();
    tsfn_.Ref(env);
    {
      std::lock_guard<std::mutex> lk(mu_);
      pendingOp_ = true;
    }
    cv_.notify_one();
    return Napi::Number::New(env, 1);
  }

  Napi::Value result(Napi::Env env, const Op& op) {
    if (op.errCode.empty()) return Napi::Number::New(env, 0);
    Napi::Array a = Napi::Array::New(env, 2);
    a.Set((uint32_t)0, Napi::String::New(env, op.errCode));
    a.Set((uint32_t)1, Napi::String::New(env, op.errMsg));
    return a;
  }

  Napi::Value Attached(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), seg_.base ? ld(&seg_.hdr->attached) : 0);
  }
  Napi::Value Unlink(const Napi::CallbackInfo& info) {
    if (!unlinked_) {
      unlinked_ = true;
      shm_unlink(name_.c_str());
    }
    return info.Env().Undefined();
  }
  // abort(reason): set the abort word (1 closed, 4 error) and wake every waiter. A running op fails soon after.
  Napi::Value Abort(const Napi::CallbackInfo& info) {
    if (seg_.base) {
      uint32_t why = info[0].As<Napi::Number>().Uint32Value();
      if (why == 1) seg_.closing = true;
      seg_.setAbort(why);
    }
    return info.Env().Undefined();
  }
  Napi::Value Aborted(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!seg_.base) return env.Null();
    uint32_t ab = ld(&seg_.hdr->abortWord);
    if (!ab) return env.Null();
    Napi::Array a = Napi::Array::New(env, 2);
    a.Set((uint32_t)0, Napi::Number::New(env, ab - 1));
    a.Set((uint32_t)1, Napi::Number::New(env, ld(&seg_.hdr->abortReason)));
    return a;
  }
  Napi::Value Info(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Napi::Object o = Napi::Object::New(env);
    o.Set("name", name_);
    o.Set("bytes", Napi::Number::New(env, (double)seg_.bytes));
    o.Set("chunkBytes", Napi::Number::New(env, seg_.chunk));
    o.Set("nbuf", Napi::Number::New(env, seg_.nbuf));
    return o;
  }
  // close(): the JS side calls it with no op in flight (after abort + waiting for the op).
  Napi::Value Close(const Napi::CallbackInfo& info) {
    shutdown();
    return info.Env().Undefined();
  }

  /** The TSFN's finalizer, on the JS thread, before close(): abort, stop and join the thread; no Release() later. */
  void tsfnFinalized() {
    guard_ = nullptr;
    tsfnDead_.store(true);
    hasTsfn_ = false;
    if (seg_.base && !closed_) {
      seg_.closing = true;
      seg_.setAbort(1);
    }
    stopThread();
  }

  /** Ask the collective's thread to exit after its current op (which the abort word ends) and wait for it. */
  void stopThread() {
    if (!worker_.joinable()) return;
    {
      std::lock_guard<std::mutex> lk(mu_);
      stop_ = true;
    }
    cv_.notify_one();
    worker_.join();
  }

  void shutdown() {
    if (closed_) return;
    closed_ = true;
    if (guard_) {
      guard_->owner = nullptr;
      guard_ = nullptr;
    }
    if (seg_.base) {
      seg_.closing = true;
      seg_.setAbort(1);
    }
    stopThread();
    if (hasTsfn_) {
      tsfn_.Release();
      hasTsfn_ = false;
    }
    if (seg_.base) {
      munmap(seg_.base, seg_.bytes);
      seg_.base = nullptr;
    }
  }

  std::string name_;
  Segment seg_;
  bool unlinked_ = false, closed_ = false, busy_ = false;
  Op op_;
  Napi::Reference<Napi::Value> dataRef_;
  Napi::ThreadSafeFunction tsfn_;
  bool hasTsfn_ = false;
  struct TsfnGuard {
    Coll* owner;
  };
  TsfnGuard* guard_ = nullptr;
  std::atomic<bool> tsfnDead_{false};
  std::thread worker_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool pendingOp_ = false, stop_ = false;
};

}  // namespace

}  // namespace shoal_shmcoll

namespace {

Napi::Object InitAll(Napi::Env env, Napi::Object exports) { return shoal_shmcoll::Coll::Init(env, exports); }

}  // namespace

NODE_API_MODULE(shoal_shmcoll, InitAll)
