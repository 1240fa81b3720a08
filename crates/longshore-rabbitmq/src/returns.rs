//! Hands each publish its own unroutable return.
//!
//! RabbitMQ sends a `basic.return` (no delivery tag) before the ack of an unroutable mandatory
//! message, and may confirm several messages with one ack (`multiple`). lapin pairs returns
//! with acks by arrival and walks a multiple ack's tags in hash order, so among concurrent
//! publishes a return can reach the wrong caller: a routable publish fails as unroutable and
//! the unroutable one is reported confirmed, which loses it.
//!
//! So every confirm of a channel is awaited here, by one task, in delivery-tag order. Confirms
//! resolved by one ack become ready together; the task takes the confirmed publishes from the
//! front of the queue as one group once no later publish can share their ack
//! ([`settleable`]), collects the group's returns and gives each to the member with the same
//! exchange, routing key and message id (which route alike). Then each caller gets its own
//! outcome.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::{pin, Pin};
use std::sync::Mutex;
use std::task::{Context, Poll};

use lapin::message::BasicReturnMessage;
use lapin::{Confirmation, PublisherConfirm};
use tokio::sync::{mpsc, oneshot};

/// What a publish's confirm resolved to, with only its own return.
pub(crate) type Outcome = Result<Confirmation, lapin::Error>;

/// Most returns kept for a publish confirmed later (see [`settle`]).
const MAX_ORPHANS: usize = 4_096;

/// Who a publish is: what RabbitMQ routes it by, and its message id.
#[derive(PartialEq, Eq)]
pub(crate) struct Identity {
    pub(crate) exchange: String,
    pub(crate) routing_key: String,
    pub(crate) message_id: Option<String>,
}

impl Identity {
    fn of_return(r: &BasicReturnMessage) -> Self {
        Identity {
            exchange: r.delivery.exchange.to_string(),
            routing_key: r.delivery.routing_key.to_string(),
            message_id: r
                .delivery
                .properties
                .message_id()
                .as_ref()
                .map(|s| s.to_string()),
        }
    }
}

/// One publish waiting for its confirm, in delivery-tag order.
struct Entry {
    identity: Identity,
    /// The confirm, once `basic_publish` has written the message (dropped if it failed).
    confirm: oneshot::Receiver<PublisherConfirm>,
    done: oneshot::Sender<Outcome>,
}

/// The pairing of one channel's confirms with its returns (see the module docs).
pub(crate) struct Returns {
    /// Held while a publish takes its delivery tag, so entries queue in tag order.
    order: Mutex<()>,
    entries: mpsc::UnboundedSender<Entry>,
}

impl Returns {
    /// Starts the pairing task of a new channel; it ends when this handle is dropped and every
    /// confirm is in.
    pub(crate) fn start() -> Self {
        let (entries, rx) = mpsc::unbounded_channel();
        tokio::spawn(pair(rx));
        Returns {
            order: Mutex::new(()),
            entries,
        }
    }

    /// Runs `publish` (a `basic_publish` on this channel) and returns its outcome once its
    /// confirm is in. The delivery tag is taken in the publish's first poll, which runs under
    /// [`Returns::order`] together with the queueing of its entry.
    pub(crate) async fn publish<F>(
        &self,
        identity: Identity,
        publish: F,
    ) -> Result<oneshot::Receiver<Outcome>, lapin::Error>
    where
        F: Future<Output = Result<PublisherConfirm, lapin::Error>>,
    {
        let mut publish = pin!(publish);
        let (confirm_tx, confirm_rx) = oneshot::channel();
        let (done, outcome) = oneshot::channel();
        let mut entry = Some(Entry {
            identity,
            confirm: confirm_rx,
            done,
        });
        let first = std::future::poll_fn(|cx| {
            let _order = self.order.lock().unwrap_or_else(|e| e.into_inner());
            let polled = publish.as_mut().poll(cx);
            if let Some(entry) = entry.take() {
                // The task is gone only with the runtime: the caller then sees no outcome.
                let _ = self.entries.send(entry);
            }
            Poll::Ready(polled)
        })
        .await;
        let published = match first {
            Poll::Ready(result) => result,
            Poll::Pending => publish.await,
        };
        // On an error the confirm sender is dropped, and the task skips the entry.
        let _ = confirm_tx.send(published?);
        Ok(outcome)
    }
}

/// Where one publish of the queue is.
enum State {
    /// `basic_publish` is still writing it: its confirm is not handed over yet.
    Writing(oneshot::Receiver<PublisherConfirm>),
    /// Written; its confirm has not come.
    Confirming(PublisherConfirm),
    /// Confirmed (or failed); `None` if it was never written. Boxed: a confirmation carries
    /// a whole returned message.
    Done(Option<Box<Outcome>>),
}

/// One publish of the queue, in delivery-tag order.
struct Slot {
    identity: Identity,
    done: oneshot::Sender<Outcome>,
    state: State,
}

impl Slot {
    /// Moves the slot on as far as it goes now; `true` once it is done.
    fn advance(&mut self, cx: &mut Context<'_>) -> bool {
        if let State::Writing(rx) = &mut self.state {
            match Pin::new(rx).poll(cx) {
                Poll::Ready(Ok(confirm)) => self.state = State::Confirming(confirm),
                Poll::Ready(Err(_)) => self.state = State::Done(None),
                Poll::Pending => return false,
            }
        }
        if let State::Confirming(confirm) = &mut self.state {
            match Pin::new(confirm).poll(cx) {
                Poll::Ready(outcome) => self.state = State::Done(Some(Box::new(outcome))),
                Poll::Pending => return false,
            }
        }
        true
    }
}

/// How many slots at the front of the queue can be settled now: every done slot before the
/// first one still confirming (or the end of the queue). One ack resolves all its confirms at
/// once, so a slot still confirming shares no ack with those before it. Nothing can be
/// settled while the first slot not done is still writing: its confirm may have come with
/// theirs, carrying one of their returns.
fn settleable(queue: &mut VecDeque<Slot>, cx: &mut Context<'_>) -> usize {
    for (i, slot) in queue.iter_mut().enumerate() {
        if !slot.advance(cx) {
            return match slot.state {
                State::Writing(_) => 0,
                _ => i,
            };
        }
    }
    queue.len()
}

/// The pairing task: takes the publishes in tag order and settles them group by group.
async fn pair(mut entries: mpsc::UnboundedReceiver<Entry>) {
    let mut queue: VecDeque<Slot> = VecDeque::new();
    let mut orphans = Vec::new();
    let mut open = true;
    std::future::poll_fn(|cx| {
        // Every publish that has taken its tag so far is in the queue before any is judged:
        // an ack covers only tags already taken.
        while open {
            match entries.poll_recv(cx) {
                Poll::Ready(Some(e)) => queue.push_back(Slot {
                    identity: e.identity,
                    done: e.done,
                    state: State::Writing(e.confirm),
                }),
                Poll::Ready(None) => open = false,
                Poll::Pending => break,
            }
        }
        let n = settleable(&mut queue, cx);
        if n > 0 {
            settle(queue.drain(..n), &mut orphans);
        }
        if !open && queue.is_empty() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await
}

/// Gives each return of a group (and each one left over from earlier groups) to the member it
/// belongs to, then tells every member. A return that matches no member waits for a later
/// group: lapin hands a return to the next ack to arrive, which may be an earlier message's
/// single ack, while the return's own message is confirmed after it.
fn settle(group: impl Iterator<Item = Slot>, orphans: &mut Vec<BasicReturnMessage>) {
    let mut returns = std::mem::take(orphans);
    let mut members = Vec::new();
    for slot in group {
        let State::Done(Some(outcome)) = slot.state else {
            continue;
        };
        let (identity, done, outcome) = (slot.identity, slot.done, *outcome);
        let (outcome, returned) = take_return(outcome);
        returns.extend(returned);
        members.push((identity, done, outcome));
    }
    for returned in returns {
        let of = Identity::of_return(&returned);
        let owner = members.iter_mut().find(|(identity, _, outcome)| {
            *identity == of && matches!(outcome, Ok(Confirmation::Ack(None)))
        });
        match owner {
            Some((_, _, outcome)) => *outcome = Ok(Confirmation::Ack(Some(returned))),
            None => orphans.push(returned),
        }
    }
    if orphans.len() > MAX_ORPHANS {
        // Only a broker that returns what was never published gets here.
        let dropped = orphans.len() - MAX_ORPHANS;
        orphans.drain(..dropped);
        tracing::warn!(
            dropped,
            "rabbitmq: returned messages matched no publish awaiting its confirm"
        );
    }
    for (_, done, outcome) in members {
        let _ = done.send(outcome);
    }
}

/// The outcome without its return, and the return.
fn take_return(outcome: Outcome) -> (Outcome, Option<BasicReturnMessage>) {
    match outcome {
        Ok(Confirmation::Ack(Some(r))) => (Ok(Confirmation::Ack(None)), Some(r)),
        Ok(Confirmation::Nack(Some(r))) => (Ok(Confirmation::Nack(None)), Some(r)),
        other => (other, None),
    }
}
