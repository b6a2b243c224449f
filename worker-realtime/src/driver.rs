//! Carries out the room's actions in the Durable Object: frames to sockets, one group commit at a time, one page of ops at a time.
//!
//! Awaiting the sync server opens the object's input gate, so other events
//! run while a commit or a page is in flight. They only reach the room,
//! which queues pushes behind the group in flight and asks for the next
//! group when this one is answered ([`arbor_shared::room::Room::on_commit`]).
//!
//! A group's commit is started (its frame sent upstream) when its action
//! comes, and answered once the actions after it are carried out: the room
//! asks for the next group before the frames of the group just answered, so
//! the sync server commits it while this object writes those frames.

use std::collections::{BTreeSet, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::task::Poll;

use arbor_shared::protocol::ServerMsg;
use arbor_shared::room::{Action, ConnId, IngestResult};

use crate::object::RoomObject;

impl RoomObject {
    /// Carries out `actions` in order; I/O actions feed their results back
    /// to the room, whose further actions are carried out too.
    ///
    /// The cursors of sockets sent `ops` are written to their attachments
    /// once, when the actions are done: memory is only lost between events,
    /// and one write per socket per event costs less than one per frame.
    pub(crate) async fn run(&self, actions: Vec<Action>) {
        let mut todo: VecDeque<Action> = actions.into();
        let mut moved: BTreeSet<ConnId> = BTreeSet::new();
        // The same ops go to every live socket: encode each frame once
        // (seqs name ops, so equal (first, last, len) is the same frame).
        let mut last_ops: Option<((u64, u64, usize), String)> = None;
        // The group commit in flight (the room asks for one at a time; any
        // more would be answered in the order asked).
        let mut commits: VecDeque<Pin<Box<dyn Future<Output = Vec<IngestResult>>>>> =
            VecDeque::new();
        loop {
            let Some(action) = todo.pop_front() else {
                let Some(in_flight) = commits.pop_front() else {
                    break;
                };
                let results = in_flight.await;
                todo.extend(
                    self.with_room(|l| l.room.on_commit(results))
                        .unwrap_or_default(),
                );
                continue;
            };
            let more = match action {
                Action::Send { conn, msg } => {
                    let text = match &msg {
                        ServerMsg::Ops { ops } => {
                            let id = (
                                ops.first().map_or(0, |o| o.seq),
                                ops.last().map_or(0, |o| o.seq),
                                ops.len(),
                            );
                            moved.insert(conn);
                            match &last_ops {
                                Some((seen, text)) if *seen == id => text.clone(),
                                _ => {
                                    let text = msg.encode();
                                    last_ops = Some((id, text.clone()));
                                    text
                                }
                            }
                        }
                        _ => msg.encode(),
                    };
                    let sent = self.with_room(|l| {
                        l.sockets
                            .get(&conn)
                            .map(|s| s.ws.send_with_str(&text).is_ok())
                    });
                    match sent.flatten() {
                        Some(true) => None,
                        _ => self.with_room(|l| {
                            l.sockets.remove(&conn);
                            l.room.on_close(conn)
                        }),
                    }
                }
                Action::Broadcast { conns, msg } => {
                    let text = msg.encode();
                    self.with_room(|l| {
                        let mut more = Vec::new();
                        for conn in conns {
                            let sent = l
                                .sockets
                                .get(&conn)
                                .map(|s| s.ws.send_with_str(&text).is_ok());
                            if sent != Some(true) {
                                l.sockets.remove(&conn);
                                more.extend(l.room.on_close(conn));
                            }
                        }
                        more
                    })
                }
                Action::Close { conn, code, reason } => self.with_room(|l| {
                    if let Some(s) = l.sockets.remove(&conn) {
                        let _ = s.ws.close(Some(code), Some(reason));
                    }
                    l.room.on_close(conn)
                }),
                Action::Commit { pushes } => {
                    let Some(upstream) = self.upstream() else {
                        continue;
                    };
                    let mut in_flight: Pin<Box<dyn Future<Output = Vec<IngestResult>>>> =
                        Box::pin(async move { upstream.commit_group(pushes).await });
                    // One poll, with this task's waker, sends the group's
                    // frame on an open link and starts listening for its
                    // answer, which is awaited once the other actions are
                    // carried out.
                    let polled = std::future::poll_fn(|cx| {
                        Poll::Ready(match in_flight.as_mut().poll(cx) {
                            Poll::Ready(results) => Some(results),
                            Poll::Pending => None,
                        })
                    })
                    .await;
                    match polled {
                        Some(results) => self.with_room(|l| l.room.on_commit(results)),
                        None => {
                            commits.push_back(in_flight);
                            None
                        }
                    }
                }
                Action::CatchUp {
                    conn,
                    after,
                    upto,
                    limit,
                } => {
                    let Some(upstream) = self.upstream() else {
                        continue;
                    };
                    let page = upstream.ops_page(after, upto, limit).await;
                    moved.insert(conn);
                    self.with_room(|l| match page {
                        Ok((ops, _)) => l.room.on_catch_up(conn, ops),
                        Err(e) => {
                            worker::console_error!("catch-up failed: {e}");
                            l.room.on_catch_up_failed(conn)
                        }
                    })
                }
                Action::Subtree { after, roots } => {
                    let Some(upstream) = self.upstream() else {
                        continue;
                    };
                    let answer = upstream.subtree_changes(after, &roots).await;
                    self.with_room(|l| {
                        // Their cursors move: the attachments are written below.
                        moved.extend(
                            l.sockets
                                .keys()
                                .copied()
                                .filter(|c| l.room.conn_root(*c).is_some()),
                        );
                        match answer {
                            Ok(answers) => l.room.on_subtree(after, answers),
                            Err(e) => {
                                worker::console_error!("subtree changes failed: {e}");
                                l.room.on_subtree_failed(after, &roots)
                            }
                        }
                    })
                }
                Action::FetchGap { after, upto, limit } => {
                    let Some(upstream) = self.upstream() else {
                        continue;
                    };
                    let page = upstream.ops_page(after, upto, limit).await;
                    self.with_room(|l| match page {
                        Ok((ops, _)) => l.room.on_gap(ops),
                        Err(e) => {
                            worker::console_error!("gap fetch failed: {e}");
                            l.room.on_gap_failed()
                        }
                    })
                }
            };
            todo.extend(more.unwrap_or_default());
        }
        for conn in moved {
            self.save_cursor(conn);
        }
    }

    /// The sync server of the room (a cheap handle: no borrow is held
    /// across the await that uses it).
    fn upstream(&self) -> Option<crate::upstream::Upstream> {
        self.with_room(|l| l.upstream.clone())
    }
}
