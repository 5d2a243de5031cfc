//! The cluster coordinator in Redis: one atomic sync per heartbeat
//! (`sync.lua`, the rules of `core::cluster::LeaseTable`) over a single
//! Redis or a Redis Cluster. Owns the connection, the keys and the
//! translation of [`SyncRequest`]/[`SyncReply`]; never decides who owns a
//! slot (the script and `core::cluster::Ownership` do) and never touches a
//! shard or a session.
//!
//! Keys, all under one hash tag (`{huddle:<cluster>}`) so the script runs
//! on one Redis Cluster master: `…:members`, `…:slots`, `…:meta`. Redis
//! must not bring back an old copy of them: run the coordinator's Redis
//! without persistence (a restart comes back empty, which the protocol's
//! quarantine covers); a failover to a replica that missed the last writes
//! is the one loss the leases cannot see.

use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;

use crate::core::cluster::{Member, NodeId, Owner, Slot, SyncReply, SyncRequest, SLOTS};

const SCRIPT: &str = include_str!("sync.lua");

/// Where the coordinator lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisTarget {
    /// One Redis (`redis://host:port/db`).
    Single(String),
    /// A Redis Cluster, by some of its masters' URLs.
    Cluster(Vec<String>),
}

/// Why a sync did not come back.
#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("the coordinator did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the coordinator's answer cannot be read: {0}")]
    Garbled(String),
}

#[derive(Clone)]
enum Connection {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

/// A connection to the coordinator, cloned freely (each clone shares it).
#[derive(Clone)]
pub struct Coordinator {
    connection: Connection,
    keys: [String; 3],
    script: redis::Script,
    timeout: Duration,
}

impl Coordinator {
    /// Connects to `target` for the cluster named `cluster`; every call
    /// gives up after `timeout`.
    pub async fn connect(
        target: &RedisTarget,
        cluster: &str,
        timeout: Duration,
    ) -> Result<Self, CoordinatorError> {
        let connect = async {
            Ok::<_, CoordinatorError>(match target {
                RedisTarget::Single(url) => {
                    let client = redis::Client::open(url.as_str())?;
                    let config = redis::aio::ConnectionManagerConfig::new()
                        .set_connection_timeout(Some(timeout))
                        .set_response_timeout(Some(timeout));
                    Connection::Single(ConnectionManager::new_with_config(client, config).await?)
                }
                RedisTarget::Cluster(urls) => {
                    let client = ClusterClient::builder(urls.iter().map(String::as_str))
                        .connection_timeout(timeout)
                        .response_timeout(timeout)
                        .build()?;
                    Connection::Cluster(client.get_async_connection().await?)
                }
            })
        };
        let connection = tokio::time::timeout(timeout, connect)
            .await
            .map_err(|_| CoordinatorError::Timeout(timeout))??;
        let tag = format!("{{huddle:{cluster}}}");
        Ok(Self {
            connection,
            keys: [
                format!("{tag}:members"),
                format!("{tag}:slots"),
                format!("{tag}:meta"),
            ],
            script: redis::Script::new(SCRIPT),
            timeout,
        })
    }

    /// One sync: renew the membership, release, claim; the state after it.
    pub async fn sync(&self, req: &SyncRequest) -> Result<SyncReply, CoordinatorError> {
        let mut invocation = self.script.prepare_invoke();
        for key in &self.keys {
            invocation.key(key);
        }
        invocation
            .arg(req.node.0.to_string())
            .arg(req.ttl_ms)
            .arg(u8::from(req.leaving))
            .arg(u8::from(req.depart))
            .arg(req.known_version.to_string())
            .arg(req.releases.len());
        for (slot, epoch) in &req.releases {
            invocation.arg(slot.index()).arg(epoch.to_string());
        }
        for slot in &req.claims {
            invocation.arg(slot.index());
        }
        let call = async {
            let raw: Raw = match &self.connection {
                Connection::Single(c) => invocation.invoke_async(&mut c.clone()).await?,
                Connection::Cluster(c) => invocation.invoke_async(&mut c.clone()).await?,
            };
            Ok::<_, CoordinatorError>(raw)
        };
        let raw = tokio::time::timeout(self.timeout, call)
            .await
            .map_err(|_| CoordinatorError::Timeout(self.timeout))??;
        decode(req.id, raw)
    }

    /// Removes the cluster's keys (for tests and benches starting from a
    /// clean slate; never while nodes run).
    pub async fn wipe(&self) -> Result<(), CoordinatorError> {
        let mut cmd = redis::cmd("DEL");
        for key in &self.keys {
            cmd.arg(key);
        }
        let _: () = match &self.connection {
            Connection::Single(c) => cmd.query_async(&mut c.clone()).await?,
            Connection::Cluster(c) => cmd.query_async(&mut c.clone()).await?,
        };
        Ok(())
    }
}

/// The script's answer: registered, members, version, table sent, table.
type Raw = (u8, Vec<String>, String, u8, Vec<String>);

fn decode(id: u64, raw: Raw) -> Result<SyncReply, CoordinatorError> {
    let (registered, members, version, sent, slots) = raw;
    let garbled = |what: &str| CoordinatorError::Garbled(what.to_string());
    if !members.len().is_multiple_of(2) || !slots.len().is_multiple_of(3) {
        return Err(garbled("lists of the wrong length"));
    }
    let mut live: Vec<Member> = members
        .chunks_exact(2)
        .map(|pair| {
            Ok(Member {
                node: NodeId(pair[0].parse().map_err(|_| garbled("a node id"))?),
                leaving: pair[1] == "1",
            })
        })
        .collect::<Result<_, CoordinatorError>>()?;
    live.sort();
    let version = version.parse().map_err(|_| garbled("a version"))?;
    let mut owners: Vec<Option<Owner>> = vec![None; usize::from(SLOTS)];
    for row in slots.chunks_exact(3) {
        let slot = row[0]
            .parse::<u16>()
            .ok()
            .and_then(Slot::new)
            .ok_or_else(|| garbled("a slot number"))?;
        owners[slot.index()] = Some(Owner {
            node: NodeId(row[1].parse().map_err(|_| garbled("an owner id"))?),
            epoch: row[2].parse().map_err(|_| garbled("an epoch"))?,
        });
    }
    Ok(SyncReply {
        id,
        registered: registered == 1,
        members: live,
        version,
        owners: (sent == 1).then_some(owners),
    })
}
