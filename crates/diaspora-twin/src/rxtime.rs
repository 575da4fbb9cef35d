//! Kernel receive timestamps for UDP sockets (`SO_TIMESTAMPNS`).
//!
//! A user-space relay that stamps a packet when its receive task runs adds
//! that task's wake-up latency to every emulated delay; on a loaded or
//! virtualised machine that is a millisecond or more. The kernel stamps
//! each datagram as it enters the receive path, so the relay schedules
//! delivery from the moment the packet reached the host, and the
//! calibration receiver measures arrival rather than its own wake-up.
//!
//! Kernel stamps are `CLOCK_REALTIME`; callers want their own monotonic
//! epoch, so [`Received::age`] gives how long ago the packet arrived
//! (realtime now minus the stamp), which they subtract from their
//! monotonic now. An age beyond [`AGE_MAX`] (a wall-clock step) is
//! discarded and the packet counts as arriving now.
//!
//! The kernel switches stamping on from a work queue, so datagrams in the
//! first moments after [`enable`] may be stamped when read instead (age
//! zero): they count as arriving when read, as they would without stamps.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Ages above this are treated as a wall-clock step and ignored.
pub const AGE_MAX: Duration = Duration::from_secs(1);

/// One datagram received with [`recv_from`].
#[derive(Debug, Clone, Copy)]
pub struct Received {
    /// Payload bytes written into the buffer.
    pub len: usize,
    /// The sender's address (`None` if the kernel gave none).
    pub from: Option<SocketAddr>,
    /// How long ago the kernel received it; zero without a usable stamp.
    pub age: Duration,
}

/// Asks the kernel to stamp every datagram received on `socket`. A failure
/// (an old kernel) leaves [`recv_from`] returning zero ages.
pub fn enable(socket: &impl AsRawFd) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: a valid fd and a pointer to a c_int of the given size.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            (&on as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Receives one datagram into `buf` with `recvmsg`, returning its length,
/// source and age. Errors are the socket's (`WouldBlock` on a non-blocking
/// socket with nothing queued, a timeout on a blocking one).
pub fn recv_from(fd: RawFd, buf: &mut [u8]) -> io::Result<Received> {
    // SAFETY: all-zero is a valid sockaddr_storage and msghdr.
    let mut storage: libc::sockaddr_storage = unsafe { zeroed() };
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // Room for a timespec control message, u64-aligned as cmsghdr needs.
    let mut control = [0u64; 8];
    let mut msg: libc::msghdr = unsafe { zeroed() };
    msg.msg_name = (&mut storage as *mut libc::sockaddr_storage).cast();
    msg.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = size_of::<[u64; 8]>() as _;
    // SAFETY: msg points at live buffers of the sizes it states.
    let n = unsafe { libc::recvmsg(fd, &mut msg, 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut stamp = None;
    // SAFETY: the CMSG_* macros walk the control buffer the kernel filled,
    // bounded by msg_controllen; the payload is read unaligned.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_TIMESTAMPNS
            {
                let ts: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast());
                if ts.tv_sec >= 0 && (0..1_000_000_000).contains(&ts.tv_nsec) {
                    stamp = Some(Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    Ok(Received {
        len: n as usize,
        from: socket_addr(&storage, msg.msg_namelen),
        age: stamp.map_or(Duration::ZERO, age_of),
    })
}

/// How long ago `stamp` (time since the Unix epoch) was, or zero if it is
/// in the future or older than [`AGE_MAX`].
fn age_of(stamp: Duration) -> Duration {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    match now.checked_sub(stamp) {
        Some(age) if age <= AGE_MAX => age,
        _ => Duration::ZERO,
    }
}

fn socket_addr(storage: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
    let len = len as usize;
    match storage.ss_family as libc::c_int {
        libc::AF_INET if len >= size_of::<libc::sockaddr_in>() => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let a: &libc::sockaddr_in =
                unsafe { &*(storage as *const libc::sockaddr_storage).cast() };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 if len >= size_of::<libc::sockaddr_in6>() => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let a: &libc::sockaddr_in6 =
                unsafe { &*(storage as *const libc::sockaddr_storage).cast() };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(a.sin6_addr.s6_addr),
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// Sets this thread's timer slack to 1 ns so its timed waits wake on time
/// (the Linux default slack is 50 µs). Best effort.
pub fn tighten_timer_slack() {
    // SAFETY: PR_SET_TIMERSLACK takes one unsigned long argument.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0, 0, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;

    #[test]
    fn a_datagram_comes_with_its_source_and_a_recent_stamp() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        enable(&rx).unwrap();
        // The kernel turns stamping on from a work queue (net_enable_timestamp);
        // give it a moment.
        std::thread::sleep(Duration::from_millis(50));
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        tx.send_to(b"hello", rx.local_addr().unwrap()).unwrap();
        std::thread::sleep(Duration::from_millis(30));
        let mut buf = [0u8; 64];
        let got = recv_from(rx.as_raw_fd(), &mut buf).unwrap();
        assert_eq!(&buf[..got.len], b"hello");
        assert_eq!(got.from, Some(tx.local_addr().unwrap()));
        // It sat in the socket for the 30 ms sleep.
        assert!(
            got.age >= Duration::from_millis(25) && got.age < AGE_MAX,
            "{:?}",
            got.age
        );
    }

    #[test]
    fn without_stamps_the_age_is_zero_and_v6_sources_parse() {
        let Ok(rx) = UdpSocket::bind("[::1]:0") else {
            return; // no IPv6 loopback on this machine
        };
        let tx = UdpSocket::bind("[::1]:0").unwrap();
        tx.send_to(b"x", rx.local_addr().unwrap()).unwrap();
        let mut buf = [0u8; 8];
        let got = recv_from(rx.as_raw_fd(), &mut buf).unwrap();
        assert_eq!(got.len, 1);
        assert_eq!(got.from, Some(tx.local_addr().unwrap()));
        assert_eq!(got.age, Duration::ZERO);
    }

    #[test]
    fn stamps_in_the_future_or_too_old_are_ignored() {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        assert_eq!(age_of(now + Duration::from_secs(5)), Duration::ZERO);
        assert_eq!(age_of(now - Duration::from_secs(5)), Duration::ZERO);
        assert!(age_of(now - Duration::from_millis(10)) >= Duration::from_millis(10));
    }
}
