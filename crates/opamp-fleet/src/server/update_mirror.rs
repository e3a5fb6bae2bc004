//! Rollout progress on a replica that does not coordinate. The coordinator's driver
//! publishes each step to its own admin API's listeners (`opamp rollout watch`, the
//! dashboard's live views); another replica has no driver, so while someone listens it
//! reads the rollouts from the database once a second and publishes each one that changed,
//! to the same listeners. Updates published this way carry no audit records (the audit log
//! is one read away) and may coalesce steps taken within the same second.

use std::collections::HashMap;
use std::time::Duration;

use tokio::sync::broadcast;

use crate::admin::types::RolloutUpdate;
use crate::catalog::{SharedStore, lock};
use crate::rollout::RolloutId;
use crate::time::Timestamp;

/// How often the database is read while someone listens.
const EVERY: Duration = Duration::from_secs(1);

/// Publishes rollouts that changed in the database to `updates`' listeners; runs until
/// dropped.
pub(crate) async fn mirror_updates(store: SharedStore, updates: broadcast::Sender<RolloutUpdate>) {
    let mut seen: HashMap<RolloutId, Timestamp> = HashMap::new();
    loop {
        tokio::time::sleep(EVERY).await;
        if updates.receiver_count() == 0 {
            continue;
        }
        let reading = store.clone();
        let known = seen.clone();
        let changed = tokio::task::spawn_blocking(move || {
            let db = lock(&reading);
            let mut changed = Vec::new();
            for summary in db.list_rollouts()? {
                if known.get(&summary.id) == Some(&summary.updated_at) {
                    continue;
                }
                if let Some(rollout) = db.load_rollout(&summary.id)? {
                    changed.push((summary.updated_at, rollout));
                }
            }
            Ok::<_, crate::store::StoreError>(changed)
        })
        .await;
        match changed {
            Ok(Ok(changed)) => {
                for (updated_at, rollout) in changed {
                    seen.insert(rollout.id().clone(), updated_at);
                    // Nobody listening any more is fine.
                    let _ = updates.send(RolloutUpdate::of(&rollout, Vec::new()));
                }
            }
            Ok(Err(error)) => tracing::warn!(%error, "cannot read rollouts for their listeners"),
            Err(_) => return,
        }
    }
}
