// Wake-up plumbing of the shared-memory pair transport (see wake.h).
#include "wake.h"

#include <errno.h>
#include <stddef.h>
#include <string.h>
#include <unistd.h>

#include <cstdint>

namespace shoal_shm {

socklen_t wakeAddr(const std::string& name, sockaddr_un* a) {
  memset(a, 0, sizeof(*a));
  a->sun_family = AF_UNIX;
  std::string s = "shoal-wake" + name;
  if (s.size() > sizeof(a->sun_path) - 2) s.resize(sizeof(a->sun_path) - 2);
  memcpy(a->sun_path + 1, s.data(), s.size());
  return static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + s.size());
}

bool sendFd(int sock, int fd) {
  char b = 'F';
  iovec iov{&b, 1};
  alignas(cmsghdr) char ctl[CMSG_SPACE(sizeof(int))];
  memset(ctl, 0, sizeof(ctl));
  msghdr m{};
  m.msg_iov = &iov;
  m.msg_iovlen = 1;
  m.msg_control = ctl;
  m.msg_controllen = sizeof(ctl);
  cmsghdr* c = CMSG_FIRSTHDR(&m);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int));
  memcpy(CMSG_DATA(c), &fd, sizeof(int));
  ssize_t n;
  do n = sendmsg(sock, &m, MSG_DONTWAIT | MSG_NOSIGNAL);
  while (n < 0 && errno == EINTR);
  return n == 1;
}

ssize_t recvWithFd(int sock, char* buf, size_t len, int* gotFd) {
  iovec iov{buf, len};
  alignas(cmsghdr) char ctl[CMSG_SPACE(sizeof(int))];
  msghdr m{};
  m.msg_iov = &iov;
  m.msg_iovlen = 1;
  m.msg_control = ctl;
  m.msg_controllen = sizeof(ctl);
  ssize_t n;
  do n = recvmsg(sock, &m, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
  while (n < 0 && errno == EINTR);
  if (n > 0) {
    for (cmsghdr* c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c)) {
      if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) memcpy(gotFd, CMSG_DATA(c), sizeof(int));
    }
  }
  return n;
}

void wakePeer(int peerEvt, int sock) {
  if (peerEvt >= 0) {
    uint64_t one = 1;
    ssize_t w;
    do w = write(peerEvt, &one, sizeof(one));
    while (w < 0 && errno == EINTR);
    return;  // EAGAIN (counter saturated) still leaves it readable
  }
  // Before the listener's eventfd has arrived (dialer only, briefly): a byte on the socket wakes it as well.
  char b = 1;
  ssize_t n;
  do n = send(sock, &b, 1, MSG_DONTWAIT | MSG_NOSIGNAL);
  while (n < 0 && errno == EINTR);
  // EAGAIN: wake bytes are already pending, the consumer wakes anyway. EPIPE: the peer is gone.
}

}  // namespace shoal_shm
