//! Rollout changes asked of a replica that does not coordinate: carried to the one that does
//! through the database (`store::postgres::forwarded`), so the admin API works the same on
//! every replica. The asking replica files the request and polls for the answer; the
//! coordinator takes it, hands it to its driver like one of its own, and files the result
//! (or the error, with the HTTP status it would have answered).

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize, de::DeserializeOwned};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::driver::{Operation, Request};
use super::relay::Wakers;
use crate::FleetError;
use crate::admin::agents::RestartRequest;
use crate::admin::types::RolloutRequest;
use crate::rollout::RolloutId;
use crate::store::{AgentRelay, ForwardedAnswer, ForwardedRequest};

/// How long a replica waits for the coordinator's answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);
/// How often it looks for the answer.
const ANSWER_POLL: Duration = Duration::from_millis(50);
/// How often the coordinator looks for requests without a notification.
const REQUEST_POLL: Duration = Duration::from_secs(1);
/// Filed requests are deleted after this long.
const KEEP_REQUESTS_MS: i64 = 3_600_000;

const CREATE: &str = "create";
const OPERATE: &str = "operate";
const RESTART: &str = "restart";

/// An [`Operation`] on the wire.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum OperationBody {
    Pause,
    Resume,
    Abort { reason: String },
}

#[derive(Debug, Serialize, Deserialize)]
struct OperateBody {
    id: String,
    operation: OperationBody,
}

fn operation_body(operation: &Operation) -> Option<OperationBody> {
    match operation {
        Operation::Pause => Some(OperationBody::Pause),
        Operation::Resume => Some(OperationBody::Resume),
        Operation::Abort { reason } => Some(OperationBody::Abort {
            reason: reason.clone(),
        }),
        _ => None,
    }
}

fn operation(body: OperationBody) -> Operation {
    match body {
        OperationBody::Pause => Operation::Pause,
        OperationBody::Resume => Operation::Resume,
        OperationBody::Abort { reason } => Operation::Abort { reason },
    }
}

fn to_json(value: &impl Serialize) -> Result<String, FleetError> {
    serde_json::to_string(value).map_err(|error| FleetError::Config {
        reason: format!("cannot encode the request for the coordinator: {error}"),
    })
}

/// The asking replica's side: forwards every request to the coordinator. Runs until the
/// caller stops polling it (this replica became the coordinator) or the admin API is gone.
pub(crate) async fn forward_requests(
    requests: &mut mpsc::Receiver<Request>,
    relay: Arc<AgentRelay>,
) {
    while let Some(request) = requests.recv().await {
        tokio::spawn(forward(relay.clone(), request));
    }
    std::future::pending::<()>().await;
}

async fn forward(relay: Arc<AgentRelay>, request: Request) {
    // The asker may have gone; nothing to tell then.
    match request {
        Request::Create { request, by, reply } => {
            let answer = match to_json(&request) {
                Ok(body) => ask(&relay, CREATE, body, by).await,
                Err(error) => Err(error),
            };
            let _ = reply.send(answer.and_then(|json| parse(&json)));
        }
        Request::Operate {
            id,
            operation,
            by,
            reply,
        } => {
            let body = operation_body(&operation)
                .ok_or_else(|| FleetError::Config {
                    reason: "this operation cannot be forwarded to the coordinator".into(),
                })
                .and_then(|operation| {
                    to_json(&OperateBody {
                        id: id.to_string(),
                        operation,
                    })
                });
            let answer = match body {
                Ok(body) => ask(&relay, OPERATE, body, by).await,
                Err(error) => Err(error),
            };
            let _ = reply.send(answer.and_then(|json| parse(&json)));
        }
        Request::Restart { request, by, reply } => {
            let answer = match to_json(&request) {
                Ok(body) => ask(&relay, RESTART, body, by).await,
                Err(error) => Err(error),
            };
            let _ = reply.send(answer.and_then(|json| parse(&json)));
        }
    }
}

fn parse<T: DeserializeOwned>(json: &str) -> Result<T, FleetError> {
    serde_json::from_str(json).map_err(|error| FleetError::Coordinator {
        status: 502,
        message: format!("unreadable answer from the coordinator: {error}"),
    })
}

/// Files the request and waits for the coordinator's answer (its result's JSON).
async fn ask(
    relay: &Arc<AgentRelay>,
    kind: &'static str,
    body: String,
    by: String,
) -> Result<String, FleetError> {
    let filing = relay.clone();
    let id = tokio::task::spawn_blocking(move || filing.forward_request(kind, body, by))
        .await
        .map_err(|_| FleetError::Stopped)??;
    tracing::info!(id, kind, "forwarded a rollout change to the coordinator");
    let deadline = tokio::time::Instant::now() + ANSWER_TIMEOUT;
    while tokio::time::Instant::now() < deadline {
        tokio::time::sleep(ANSWER_POLL).await;
        let reading = relay.clone();
        let answer = tokio::task::spawn_blocking(move || reading.request_answer(id))
            .await
            .map_err(|_| FleetError::Stopped)?;
        match answer {
            Ok(Some(ForwardedAnswer {
                status: 200,
                answer,
            })) => return Ok(answer),
            Ok(Some(ForwardedAnswer { status, answer })) => {
                return Err(FleetError::Coordinator {
                    status,
                    message: answer,
                });
            }
            Ok(None) => {}
            Err(error) => {
                tracing::warn!(%error, id, "cannot read the coordinator's answer; retrying")
            }
        }
    }
    Err(FleetError::Coordinator {
        status: 504,
        message: format!(
            "the coordinator did not answer within {ANSWER_TIMEOUT:?}; the change may or may not \
             have been made (is a replica holding the coordinator lease?): check before retrying"
        ),
    })
}

/// The coordinator's side: carries out the requests other replicas filed, until `shutdown`.
pub(crate) async fn serve_forwarded(
    relay: Arc<AgentRelay>,
    driver: mpsc::Sender<Request>,
    wakers: Arc<Wakers>,
    shutdown: CancellationToken,
) {
    let mut purged = tokio::time::Instant::now();
    loop {
        let taking = relay.clone();
        match tokio::task::spawn_blocking(move || taking.take_requests()).await {
            Ok(Ok(requests)) => {
                for request in requests {
                    let id = request.id;
                    let answer = carry_out(&driver, request).await;
                    let answering = relay.clone();
                    let filed =
                        tokio::task::spawn_blocking(move || answering.answer_request(id, answer))
                            .await;
                    if !matches!(filed, Ok(Ok(()))) {
                        tracing::error!(
                            id,
                            "cannot file the answer to a forwarded request; its replica will time out"
                        );
                    }
                }
            }
            Ok(Err(error)) => tracing::warn!(%error, "cannot read forwarded requests; retrying"),
            Err(_) => return,
        }
        if purged.elapsed() > Duration::from_secs(60) {
            purged = tokio::time::Instant::now();
            let purging = relay.clone();
            let _ =
                tokio::task::spawn_blocking(move || purging.purge_requests(KEEP_REQUESTS_MS)).await;
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = wakers.requests.notified() => {}
            () = tokio::time::sleep(REQUEST_POLL) => {}
        }
    }
}

/// Hands a forwarded request to the driver and returns its answer for the asking replica.
async fn carry_out(driver: &mpsc::Sender<Request>, request: ForwardedRequest) -> ForwardedAnswer {
    let ForwardedRequest {
        id,
        kind,
        body,
        operator: by,
    } = request;
    tracing::info!(
        id,
        kind,
        by,
        "carrying out a rollout change forwarded by another replica"
    );
    let bad = |error: serde_json::Error| FleetError::Config {
        reason: format!("unreadable forwarded request: {error}"),
    };
    match kind.as_str() {
        CREATE => match serde_json::from_str::<RolloutRequest>(&body).map_err(bad) {
            Ok(request) => {
                answer_of(ask_driver(driver, |reply| Request::Create { request, by, reply }).await)
            }
            Err(error) => answer_of::<()>(Err(error)),
        },
        OPERATE => match serde_json::from_str::<OperateBody>(&body).map_err(bad) {
            Ok(body) => {
                let id = RolloutId::new(body.id);
                let operation = operation(body.operation);
                answer_of(
                    ask_driver(driver, |reply| Request::Operate {
                        id,
                        operation,
                        by,
                        reply,
                    })
                    .await,
                )
            }
            Err(error) => answer_of::<()>(Err(error)),
        },
        RESTART => match serde_json::from_str::<RestartRequest>(&body).map_err(bad) {
            Ok(request) => {
                answer_of(ask_driver(driver, |reply| Request::Restart { request, by, reply }).await)
            }
            Err(error) => answer_of::<()>(Err(error)),
        },
        other => answer_of::<()>(Err(FleetError::Config {
            reason: format!("unknown forwarded request {other:?} (from a newer replica?)"),
        })),
    }
}

async fn ask_driver<T>(
    driver: &mpsc::Sender<Request>,
    request: impl FnOnce(oneshot::Sender<Result<T, FleetError>>) -> Request,
) -> Result<T, FleetError> {
    let (reply, answer) = oneshot::channel();
    driver
        .send(request(reply))
        .await
        .map_err(|_| FleetError::Stopped)?;
    answer.await.map_err(|_| FleetError::Stopped)?
}

fn answer_of<T: Serialize>(result: Result<T, FleetError>) -> ForwardedAnswer {
    let failed = |error: &FleetError| ForwardedAnswer {
        status: crate::admin::routes::status_of(error).as_u16(),
        answer: error.to_string(),
    };
    match result {
        Ok(value) => match serde_json::to_string(&value) {
            Ok(answer) => ForwardedAnswer {
                status: 200,
                answer,
            },
            Err(error) => failed(&FleetError::Config {
                reason: format!("cannot encode the answer: {error}"),
            }),
        },
        Err(error) => failed(&error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_cross_the_wire_unchanged() {
        for op in [
            Operation::Pause,
            Operation::Resume,
            Operation::Abort {
                reason: "canary \"unhealthy\"".into(),
            },
        ] {
            let json = serde_json::to_string(&operation_body(&op).unwrap()).unwrap();
            let back: OperationBody = serde_json::from_str(&json).unwrap();
            assert_eq!(operation(back), op);
        }
    }

    #[test]
    fn an_error_keeps_the_status_the_coordinator_would_have_answered() {
        let answer = answer_of::<()>(Err(FleetError::NotFound {
            what: "rollout r-1".into(),
        }));
        assert_eq!(answer.status, 404);
        assert!(answer.answer.contains("rollout r-1"), "{}", answer.answer);
        let ok = answer_of(Ok(vec![1, 2]));
        assert_eq!((ok.status, ok.answer.as_str()), (200, "[1,2]"));
    }
}
