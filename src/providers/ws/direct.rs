//! A provider socket shared by its pump task and by the senders on its own thread, so a message
//! sent there (a caller frame bound for Deepgram, from the media socket's reader) is encoded and
//! handed to the kernel at once: no queue, no wake-up of the pump, no second task poll.
//!
//! The pump still owns the socket's life: it reads, answers pings, finishes a write the kernel
//! could not take at once (when the socket turns writable) and reports a failed write as the
//! socket lost. Each socket is registered in a map of its thread while its pump runs; a sender
//! elsewhere (another thread, or after the pump ended) falls back to the pump's queue.

use awc::error::WsProtocolError;
use awc::ws::{Codec, Frame, Message};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

/// A provider socket as awc opens it.
pub(super) type Socket = actix_codec::Framed<awc::BoxedSocket, Codec>;

/// What a direct write did not do.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Refused {
    /// `limit` messages are already waiting for the kernel (the peer is not reading).
    Full,
    /// A write failed earlier: the socket is lost (its pump reports why).
    Broken,
    /// The message could not be encoded.
    Encode(String),
}

/// One open socket and what its writers share.
pub(super) struct SharedSocket {
    framed: RefCell<Socket>,
    /// The pump's waker: a write the kernel could not take whole is finished by the pump, whose
    /// task the socket wakes once it turns writable.
    pump: RefCell<Option<Waker>>,
    /// Messages written since the write buffer was last empty (what `queued` reports).
    unflushed: Cell<usize>,
    /// Why a write failed, once one has.
    failed: RefCell<Option<String>>,
    /// A close frame is buffered: nothing may follow it (RFC 6455).
    closing: Cell<bool>,
}

thread_local! {
    /// This thread's open sockets, by id.
    static SOCKETS: RefCell<HashMap<u64, Rc<SharedSocket>>> = RefCell::new(HashMap::new());
}

/// Socket ids, unique in the process.
static NEXT_SOCKET: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// A socket's place in its thread's map; dropping it (when the pump ends) takes it out, so
/// senders fall back to the pump's queue, which is closed by then.
pub(super) struct Registration {
    id: u64,
}

impl Registration {
    /// Registers `framed` on the current thread: returns the shared socket and its id.
    pub(super) fn new(framed: Socket) -> (Self, Rc<SharedSocket>) {
        let id = NEXT_SOCKET.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let socket = Rc::new(SharedSocket {
            framed: RefCell::new(framed),
            pump: RefCell::new(None),
            unflushed: Cell::new(0),
            failed: RefCell::new(None),
            closing: Cell::new(false),
        });
        SOCKETS.with(|sockets| sockets.borrow_mut().insert(id, socket.clone()));
        (Self { id }, socket)
    }

    pub(super) fn id(&self) -> u64 {
        self.id
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        // `try_with`: the thread's map may already be gone when a thread ends.
        let _ = SOCKETS.try_with(|sockets| sockets.borrow_mut().remove(&self.id));
    }
}

/// Socket `id`, when it is open on this thread.
pub(super) fn socket(id: u64) -> Option<Rc<SharedSocket>> {
    SOCKETS
        .try_with(|sockets| sockets.borrow().get(&id).cloned())
        .ok()
        .flatten()
}

impl SharedSocket {
    /// Encodes `message` into the socket and hands it to the kernel now, unless `limit`
    /// messages already wait for it; what the kernel does not take the pump finishes later.
    pub(super) fn write(&self, message: Message, limit: usize) -> Result<(), Refused> {
        if self.failed.borrow().is_some() || self.closing.get() {
            return Err(Refused::Broken);
        }
        if self.unflushed.get() >= limit {
            return Err(Refused::Full);
        }
        let mut framed = self.framed.borrow_mut();
        Pin::new(&mut *framed)
            .write(message)
            .map_err(|e| Refused::Encode(e.to_string()))?;
        self.unflushed.set(self.unflushed.get() + 1);
        // Before the pump's first poll there is no waker yet; that poll flushes whatever the
        // kernel did not take, so no wake-up is needed for it.
        let poll = {
            let pump = self.pump.borrow();
            let cx = &mut Context::from_waker(pump.as_ref().unwrap_or(Waker::noop()));
            Pin::new(&mut *framed).flush(cx)
        };
        drop(framed);
        self.flushed(poll);
        if self.failed.borrow().is_some() {
            // The pump reports the loss (its next poll sees it). Cloned on this rare path only,
            // so no borrow is held while waking and a frame pays no waker clone.
            let waker = self.pump.borrow().clone();
            if let Some(waker) = waker {
                waker.wake();
            }
        }
        Ok(())
    }

    /// Encodes `message` into the socket for the pump's next flush (the pump's own writes:
    /// commands from its queue, pongs, the close). After a close nothing more is buffered or
    /// written.
    pub(super) fn buffer(&self, message: Message) -> Result<(), WsProtocolError> {
        if self.closing.get() {
            return Ok(());
        }
        if matches!(message, Message::Close(_)) {
            self.closing.set(true);
        }
        let mut framed = self.framed.borrow_mut();
        Pin::new(&mut *framed).write(message)?;
        self.unflushed.set(self.unflushed.get() + 1);
        Ok(())
    }

    /// The pump's poll: keeps its waker, finishes pending writes, then reads the next frame. A
    /// failed write ends the socket as a read error would.
    pub(super) fn poll_frame(
        &self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame, WsProtocolError>>> {
        if let Some(Err(err)) = self.poll_flush(cx) {
            return Poll::Ready(Some(Err(err)));
        }
        if let Some(message) = self.failed.borrow().as_ref() {
            return Poll::Ready(Some(Err(WsProtocolError::Io(std::io::Error::other(
                message.clone(),
            )))));
        }
        Pin::new(&mut *self.framed.borrow_mut()).next_item(cx)
    }

    /// The pump's flush: writes what is buffered and flushes the socket (TLS keeps written
    /// bytes of its own until then). `None` while the kernel takes no more (the socket wakes
    /// the pump when it does), `Some(Ok)` once everything is out. Keeps the pump's waker, so
    /// direct writes that the kernel cannot finish wake the pump too.
    pub(super) fn poll_flush(&self, cx: &mut Context<'_>) -> Option<Result<(), WsProtocolError>> {
        {
            let mut pump = self.pump.borrow_mut();
            if !pump.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                *pump = Some(cx.waker().clone());
            }
        }
        let mut framed = self.framed.borrow_mut();
        // Every message since the last complete flush counts: the buffer may be empty while
        // the socket (TLS) still holds some of it.
        if framed.is_write_buf_empty() && self.unflushed.get() == 0 {
            return Some(Ok(()));
        }
        let poll = Pin::new(&mut *framed).flush::<Message>(cx);
        drop(framed);
        match poll {
            Poll::Pending => None,
            Poll::Ready(result) => {
                if result.is_ok() {
                    self.unflushed.set(0);
                }
                Some(result)
            }
        }
    }

    /// Messages encoded but not yet all taken by the kernel.
    pub(super) fn unflushed(&self) -> usize {
        self.unflushed.get()
    }

    fn flushed(&self, poll: Poll<Result<(), WsProtocolError>>) {
        match poll {
            Poll::Ready(Ok(())) => self.unflushed.set(0),
            Poll::Ready(Err(err)) => *self.failed.borrow_mut() = Some(err.to_string()),
            Poll::Pending => {}
        }
    }
}
