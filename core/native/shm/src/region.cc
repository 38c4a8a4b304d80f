// Named shared regions and process-wide allocator tuning of the shm addon (N-API).
#include <malloc.h>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <string>

#include "segment.h"

namespace shoal_shm {
namespace {

// Large receive buffers are malloc'd; glibc would mmap (and page-fault in) every buffer above its dynamic
// threshold. Raising the threshold lets freed receive buffers be reused from the heap. Called explicitly from JS
// (`tuneMalloc`) because it is process-wide.
Napi::Value TuneMalloc(const Napi::CallbackInfo& info) {
  int bytes = info[0].As<Napi::Number>().Int32Value();
  bool ok = mallopt(M_MMAP_THRESHOLD, bytes) == 1 && mallopt(M_TRIM_THRESHOLD, bytes * 2) == 1;
  return Napi::Boolean::New(info.Env(), ok);
}

// Named shared regions: plain byte arrays two processes of one host map (the parameter server's same-host data
// plane). `mapRegion(name, bytes, create)` returns an ArrayBuffer over the mapping, unmapped when V8 collects it.
// Creating reserves the pages (posix_fallocate), so a full /dev/shm is an error here and not a SIGBUS at first
// touch; both sides map with MAP_POPULATE, so the first round does not page-fault.
Napi::Value MapRegion(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 3 || !info[0].IsString() || !info[1].IsNumber()) {
    Napi::TypeError::New(env, "mapRegion(name: string, bytes: number, create: boolean)").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  std::string name = info[0].As<Napi::String>();
  double want = info[1].As<Napi::Number>().DoubleValue();
  bool create = info[2].ToBoolean();
  if (!(want >= 1) || want > 1e15) {
    Napi::RangeError::New(env, "region size must be positive").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  size_t bytes = static_cast<size_t>(want);
  int fd = shm_open(name.c_str(), create ? (O_CREAT | O_EXCL | O_RDWR) : O_RDWR, 0600);
  if (fd < 0) {
    ThrowErrnoFor(env, create ? "shm_open(create)" : "shm_open", name, errno);
    return env.Undefined();
  }
  if (create) {
    int e = posix_fallocate(fd, 0, static_cast<off_t>(bytes));
    if (e != 0) {
      close(fd);
      shm_unlink(name.c_str());
      ThrowErrnoFor(env, "posix_fallocate", name, e);
      return env.Undefined();
    }
  } else {
    struct stat st;
    if (fstat(fd, &st) != 0 || static_cast<size_t>(st.st_size) != bytes) {
      close(fd);
      Napi::Error err = Napi::Error::New(env, "region " + name + " has " + std::to_string(static_cast<long long>(st.st_size)) + " bytes, expected " + std::to_string(bytes));
      err.Set("code", Napi::String::New(env, "ESIZE"));
      err.ThrowAsJavaScriptException();
      return env.Undefined();
    }
  }
  void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, 0);
  int e = errno;
  close(fd);
  if (p == MAP_FAILED) {
    if (create) shm_unlink(name.c_str());
    ThrowErrnoFor(env, "mmap", name, e);
    return env.Undefined();
  }
  return Napi::ArrayBuffer::New(
      env, p, bytes, [](Napi::Env, void* data, size_t* len) { munmap(data, *len); delete len; }, new size_t(bytes));
}

Napi::Value UnlinkRegion(const Napi::CallbackInfo& info) {
  if (info.Length() < 1 || !info[0].IsString()) {
    Napi::TypeError::New(info.Env(), "unlinkRegion(name: string)").ThrowAsJavaScriptException();
    return info.Env().Undefined();
  }
  std::string name = info[0].As<Napi::String>();
  return Napi::Boolean::New(info.Env(), shm_unlink(name.c_str()) == 0);
}

}  // namespace

void InitRegions(Napi::Env env, Napi::Object exports) {
  exports.Set("tuneMalloc", Napi::Function::New(env, TuneMalloc));
  exports.Set("mapRegion", Napi::Function::New(env, MapRegion));
  exports.Set("unlinkRegion", Napi::Function::New(env, UnlinkRegion));
}

}  // namespace shoal_shm
