//! Admission bounds: what a peer that has not (yet) proved anything may hold on the
//! server. Each bound has a documented default; see [`AdmissionLimits`].

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Bounds on connections and downloads, against peers that open sockets and then hold
/// them (silent WebSockets, stalled download readers, many connections from one host).
///
/// ```
/// use std::time::Duration;
/// use opamp_transport::server::{AdmissionLimits, OpampServerConfig};
///
/// let mut config = OpampServerConfig::new("127.0.0.1:0".parse().unwrap());
/// config.admission.first_message_timeout = Duration::from_secs(5);
/// config.admission.max_connections_per_address = Some(64);
/// assert!(AdmissionLimits::default().exempt_loopback);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AdmissionLimits {
    /// A WebSocket must carry its first OpAMP message within this time of the upgrade,
    /// or it is closed with 1008. Pings and pongs do not count. Default 10 s.
    pub first_message_timeout: Duration,
    /// Most connections open at once from one source IP address; more are answered
    /// `503` with `Retry-After`. `None` sets no per-address bound. Default 256.
    pub max_connections_per_address: Option<usize>,
    /// Whether loopback addresses are exempt from the per-address bound (load tests and
    /// a local proxy connect from 127.0.0.1). Default `true`.
    pub exempt_loopback: bool,
    /// A connection whose peer accepts no bytes for this long while the server has some
    /// to send (a stalled download reader, a WebSocket that does not read) is dropped.
    /// Default 30 s.
    pub write_timeout: Duration,
    /// Most package downloads served at once; more are answered `503` with
    /// `Retry-After`. Default 256.
    pub max_concurrent_downloads: usize,
}

impl Default for AdmissionLimits {
    fn default() -> Self {
        Self {
            first_message_timeout: Duration::from_secs(10),
            max_connections_per_address: Some(256),
            exempt_loopback: true,
            write_timeout: Duration::from_secs(30),
            max_concurrent_downloads: 256,
        }
    }
}

/// Counts open connections per source address.
#[derive(Debug, Clone)]
pub(crate) struct AddressCounts {
    limit: Option<usize>,
    exempt_loopback: bool,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// One connection counted against its address; uncounted when dropped.
#[derive(Debug)]
pub(crate) struct AddressPermit {
    address: IpAddr,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl AddressCounts {
    pub(crate) fn new(limits: &AdmissionLimits) -> Self {
        Self {
            limit: limits.max_connections_per_address,
            exempt_loopback: limits.exempt_loopback,
            open: Arc::default(),
        }
    }

    /// A permit for one more connection from `peer`: `Ok(None)` when the address is not
    /// counted, `Err(())` when it already holds the maximum.
    pub(crate) fn admit(&self, peer: SocketAddr) -> Result<Option<AddressPermit>, ()> {
        let Some(limit) = self.limit else {
            return Ok(None);
        };
        let address = peer.ip().to_canonical();
        if self.exempt_loopback && address.is_loopback() {
            return Ok(None);
        }
        let mut open = lock(&self.open);
        let count = open.entry(address).or_insert(0);
        if *count >= limit {
            return Err(());
        }
        *count += 1;
        Ok(Some(AddressPermit {
            address,
            open: self.open.clone(),
        }))
    }
}

impl Drop for AddressPermit {
    fn drop(&mut self) {
        let mut open = lock(&self.open);
        if let Some(count) = open.get_mut(&self.address) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                // Addresses that left cost nothing.
                open.remove(&self.address);
            }
        }
    }
}

fn lock(open: &Mutex<HashMap<IpAddr, usize>>) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
    // Counts stay consistent even if a holder panicked: each update is one statement.
    open.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(limit: usize, exempt_loopback: bool) -> AddressCounts {
        AddressCounts::new(&AdmissionLimits {
            max_connections_per_address: Some(limit),
            exempt_loopback,
            ..AdmissionLimits::default()
        })
    }

    #[test]
    fn each_address_gets_its_own_bound_and_permits_give_room_back() {
        let counts = counts(2, false);
        let a: SocketAddr = "10.0.0.1:1000".parse().unwrap();
        let b: SocketAddr = "10.0.0.2:1000".parse().unwrap();
        let first = counts.admit(a).unwrap();
        let _second = counts.admit(a).unwrap();
        assert!(counts.admit(a).is_err());
        assert!(counts.admit(b).unwrap().is_some());
        drop(first);
        assert!(counts.admit(a).unwrap().is_some());
    }

    #[test]
    fn loopback_is_exempt_only_when_asked_and_mapped_addresses_count_as_one() {
        let local: SocketAddr = "127.0.0.1:1".parse().unwrap();
        assert!(counts(0, true).admit(local).unwrap().is_none());
        assert!(counts(0, false).admit(local).is_err());
        let counted = counts(1, false);
        let _held = counted.admit("10.0.0.1:1".parse().unwrap()).unwrap();
        assert!(
            counted
                .admit("[::ffff:10.0.0.1]:2".parse().unwrap())
                .is_err()
        );
    }
}
