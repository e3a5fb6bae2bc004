//! Dashboard sign-in: an operator token exchanged for a session cookie, and CSRF tokens.
//!
//! The cookie is `HttpOnly` (scripts cannot read it), `SameSite=Strict` (other sites cannot
//! make the browser send it) and `Secure` when the request arrived over HTTPS (a TLS-terminating
//! proxy says so with `X-Forwarded-Proto: https`). Every form that writes carries the session's
//! CSRF token, checked in constant time, and writes whose `Origin` names another site are
//! refused before that.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::Form;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use rand::RngCore as _;
use serde::Deserialize;
use subtle::ConstantTimeEq as _;

use super::Dashboard;
use super::html::{bare_page, esc};
use crate::admin::routes::find_operator;

/// Name of the session cookie.
const COOKIE: &str = "opamp_session";
/// How long a session lasts after sign-in.
const LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// Most sessions kept at once; the oldest goes when a sign-in would exceed it.
const MAX_SESSIONS: usize = 10_000;

/// A signed-in operator.
#[derive(Clone, Debug)]
pub(crate) struct Session {
    /// The operator's name (the audit log records it).
    pub(crate) operator: String,
    /// Whether the operator may only read.
    pub(crate) read_only: bool,
    /// The token every form that writes must carry.
    pub(crate) csrf: String,
    expires: Instant,
}

impl Session {
    /// Whether `presented` is this session's CSRF token.
    pub(crate) fn csrf_matches(&self, presented: &str) -> bool {
        bool::from(presented.as_bytes().ct_eq(self.csrf.as_bytes()))
    }
}

/// The sessions of the dashboard, by cookie value.
#[derive(Clone, Default)]
pub(crate) struct Sessions(Arc<Mutex<HashMap<String, Session>>>);

impl Sessions {
    fn get(&self, id: &str) -> Option<Session> {
        let mut sessions = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        match sessions.get(id) {
            Some(session) if session.expires > Instant::now() => Some(session.clone()),
            Some(_) => {
                sessions.remove(id);
                None
            }
            None => None,
        }
    }

    fn create(&self, operator: String, read_only: bool) -> String {
        let id = random_hex();
        let session = Session {
            operator,
            read_only,
            csrf: random_hex(),
            expires: Instant::now() + LIFETIME,
        };
        let mut sessions = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        sessions.retain(|_, s| s.expires > now);
        if sessions.len() >= MAX_SESSIONS
            && let Some(oldest) = sessions
                .iter()
                .min_by_key(|(_, s)| s.expires)
                .map(|(k, _)| k.clone())
        {
            sessions.remove(&oldest);
        }
        sessions.insert(id.clone(), session);
        id
    }

    fn remove(&self, id: &str) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id);
    }
}

/// 32 random bytes from the operating system, as hex.
fn random_hex() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

fn cookie_value(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (name, value) = pair.trim().split_once('=')?;
            (name == COOKIE).then(|| value.to_owned())
        })
}

fn over_https(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("https"))
}

/// Whether a write's `Origin` (when the browser sent one) is this server.
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let Some(host) = headers.get(header::HOST).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .is_some_and(|authority| authority == host)
}

/// Middleware of the signed-in pages: no session → the login page; a write from another
/// origin → 403; a write by a read-only operator → 403 (logging out is not a write).
pub(crate) async fn require_session(
    State(dashboard): State<Dashboard>,
    mut request: Request,
    next: Next,
) -> Response {
    let session = cookie_value(request.headers()).and_then(|id| dashboard.sessions.get(&id));
    let Some(session) = session else {
        if request.method() == Method::GET {
            return Redirect::to("/ui/login").into_response();
        }
        return refusal(StatusCode::UNAUTHORIZED, "Sign in first.");
    };
    if request.method() != Method::GET && request.method() != Method::HEAD {
        if !same_origin(request.headers()) {
            return refusal(StatusCode::FORBIDDEN, "Cross-site request refused.");
        }
        if session.read_only && request.uri().path() != "/ui/logout" {
            return refusal(
                StatusCode::FORBIDDEN,
                &format!("Operator {} may only read.", session.operator),
            );
        }
    }
    request.extensions_mut().insert(session);
    next.run(request).await
}

/// An error page with `status`.
pub(crate) fn refusal(status: StatusCode, message: &str) -> Response {
    let body = format!(
        "<p class=\"error\" role=\"alert\">{}</p><p><a href=\"/ui\">Back to the dashboard</a></p>",
        esc(message)
    );
    (status, Html(bare_page(status.as_str(), &body))).into_response()
}

fn login_form(error: Option<&str>) -> String {
    let error = error.map_or_else(String::new, |e| {
        format!("<p class=\"error\" role=\"alert\">{}</p>", esc(e))
    });
    bare_page(
        "Sign in",
        &format!(
            "{error}<form method=\"post\" action=\"/ui/login\" class=\"login\">\
             <label>Operator token <input type=\"password\" name=\"token\" \
             autocomplete=\"current-password\" required autofocus></label>\
             <button type=\"submit\">Sign in</button></form>\
             <p class=\"hint\">The token of an operator in the server's <code>[admin]</code> \
             configuration.</p>"
        ),
    )
}

/// `GET /ui/login`.
pub(crate) async fn login_page() -> Html<String> {
    Html(login_form(None))
}

/// The sign-in form's body.
#[derive(Deserialize)]
pub(crate) struct LoginForm {
    token: String,
}

/// `POST /ui/login`: a known token starts a session.
pub(crate) async fn login(
    State(dashboard): State<Dashboard>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    if !same_origin(&headers) {
        return refusal(StatusCode::FORBIDDEN, "Cross-site request refused.");
    }
    let Some(operator) = find_operator(&dashboard.admin.operators, &form.token) else {
        tracing::info!("dashboard sign-in refused: unknown token");
        return (
            StatusCode::UNAUTHORIZED,
            Html(login_form(Some("That token is not an operator's."))),
        )
            .into_response();
    };
    tracing::info!(operator = %operator.name, "dashboard sign-in");
    let id = dashboard
        .sessions
        .create(operator.name.clone(), operator.read_only);
    let secure = if over_https(&headers) { "; Secure" } else { "" };
    let cookie = format!(
        "{COOKIE}={id}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
        LIFETIME.as_secs()
    );
    let mut response = Redirect::to("/ui").into_response();
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

/// The CSRF field of forms with nothing else in them.
#[derive(Deserialize)]
pub(crate) struct CsrfForm {
    /// The session's CSRF token.
    pub(crate) csrf: String,
}

/// `POST /ui/logout`.
pub(crate) async fn logout(
    State(dashboard): State<Dashboard>,
    headers: HeaderMap,
    axum::Extension(session): axum::Extension<Session>,
    Form(form): Form<CsrfForm>,
) -> Response {
    if !session.csrf_matches(&form.csrf) {
        return refusal(StatusCode::FORBIDDEN, "Missing or wrong CSRF token.");
    }
    if let Some(id) = cookie_value(&headers) {
        dashboard.sessions.remove(&id);
    }
    let mut response = Redirect::to("/ui/login").into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("opamp_session=; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; opamp_session=abc; b=2"),
        );
        assert_eq!(cookie_value(&headers).as_deref(), Some("abc"));
    }

    #[test]
    fn writes_from_another_origin_are_told_apart() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("127.0.0.1:4321"));
        assert!(same_origin(&headers));
        headers.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:4321"),
        );
        assert!(same_origin(&headers));
        headers.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://evil.example"),
        );
        assert!(!same_origin(&headers));
    }

    #[test]
    fn expired_sessions_are_gone() {
        let sessions = Sessions::default();
        let id = sessions.create("ops".into(), false);
        assert!(sessions.get(&id).is_some());
        sessions.0.lock().unwrap().get_mut(&id).unwrap().expires =
            Instant::now() - Duration::from_secs(1);
        assert!(sessions.get(&id).is_none());
    }
}
