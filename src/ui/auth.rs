//! Who may use the page. The server listens on loopback only, and every request must
//! also:
//! - name this server in `Host` (a page of another site that rebinds its DNS name to
//!   127.0.0.1 sends its own name, and is refused);
//! - carry the session cookie, which the random access token printed by `baton ui` buys
//!   once (`?token=...`, as Jupyter does; the cookie is HttpOnly and SameSite=Strict);
//! - when it changes something (any method but GET and HEAD), come from this server's
//!   own pages: `Origin` (else `Referer`) must be this server, and the form must carry
//!   the session's CSRF token. Other ports of 127.0.0.1 are the same *site*, so the
//!   cookie alone would not stop them; the origin check does.

use super::AppState;
use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

/// Sessions kept at once; the oldest is forgotten first (its page asks for the token again).
const MAX_SESSIONS: usize = 64;
/// Largest form body accepted.
pub const MAX_FORM_BYTES: usize = 64 * 1024;
/// The query parameter carrying the access token.
const TOKEN_PARAM: &str = "token";
/// The form field carrying the CSRF token.
pub const CSRF_FIELD: &str = "csrf";

/// A browser session: bought with the access token, named by the cookie.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    id: String,
    /// Put in every form; a state-changing request must send it back.
    pub csrf: String,
}

/// What to do with a request, before it reaches a page.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Let it through (state-changing requests still need [`Auth::csrf_ok`]).
    Pass(Session),
    /// A valid token: set the session cookie and send the browser on without the token.
    Exchange {
        session: Session,
        location: String,
    },
    Refuse(StatusCode, &'static str),
}

/// The access token, the sessions it bought and the origins that count as this server.
pub struct Auth {
    token: String,
    port: u16,
    sessions: Mutex<VecDeque<Session>>,
}

impl Auth {
    pub fn new(port: u16) -> Auth {
        Auth { token: random_secret(), port, sessions: Mutex::new(VecDeque::new()) }
    }

    /// The address to open, with the access token.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/?{TOKEN_PARAM}={}", self.port, self.token)
    }

    /// The cookie names the port: browsers share cookies between ports of one host, and
    /// two `baton ui` servers must not log each other out.
    fn cookie_name(&self) -> String {
        format!("baton_session_{}", self.port)
    }

    /// Judge a request by its method, address and headers.
    pub fn check(&self, method: &Method, uri: &Uri, headers: &HeaderMap) -> Verdict {
        if !self.host_ok(header_str(headers, header::HOST)) {
            return Verdict::Refuse(StatusCode::FORBIDDEN, "This server answers only to 127.0.0.1 and localhost on its own port.");
        }
        let reads = method == Method::GET || method == Method::HEAD;
        if reads && let Some(token) = query_value(uri, TOKEN_PARAM) {
            if !same_secret(&token, &self.token) {
                return Verdict::Refuse(StatusCode::UNAUTHORIZED, "The access token is wrong: open the address `baton ui` printed.");
            }
            return Verdict::Exchange { session: self.start_session(), location: without_token(uri) };
        }
        let Some(session) = self.session(headers) else {
            return Verdict::Refuse(
                StatusCode::UNAUTHORIZED,
                "This page needs the access token: open the address `baton ui` printed (it ends in ?token=...).",
            );
        };
        if !reads && !self.same_origin(header_str(headers, header::ORIGIN), header_str(headers, header::REFERER)) {
            return Verdict::Refuse(
                StatusCode::FORBIDDEN,
                "Changes are accepted only from baton's own pages (cross-origin request refused).",
            );
        }
        Verdict::Pass(session)
    }

    /// Whether `Host` names this server.
    pub fn host_ok(&self, host: Option<&str>) -> bool {
        let Some(host) = host else { return false };
        let host = host.to_ascii_lowercase();
        [format!("127.0.0.1:{}", self.port), format!("localhost:{}", self.port)].contains(&host)
    }

    /// Whether a state-changing request comes from this server's pages: its `Origin`,
    /// or without one its `Referer`, must be this server; neither is refused.
    pub fn same_origin(&self, origin: Option<&str>, referer: Option<&str>) -> bool {
        let ours = [format!("http://127.0.0.1:{}", self.port), format!("http://localhost:{}", self.port)];
        match (origin, referer) {
            (Some(origin), _) => ours.iter().any(|o| o.eq_ignore_ascii_case(origin)),
            (None, Some(referer)) => ours.iter().any(|o| referer.strip_prefix(o.as_str()).is_some_and(|rest| rest.starts_with('/'))),
            (None, None) => false,
        }
    }

    /// Whether `given` is the session's CSRF token.
    pub fn csrf_ok(session: &Session, given: Option<&str>) -> bool {
        given.is_some_and(|g| same_secret(g, &session.csrf))
    }

    /// The `Set-Cookie` value for a session.
    pub fn set_cookie(&self, session: &Session) -> String {
        format!("{}={}; HttpOnly; SameSite=Strict; Path=/", self.cookie_name(), session.id)
    }

    fn start_session(&self) -> Session {
        let session = Session { id: random_secret(), csrf: random_secret() };
        let mut sessions = self.sessions.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if sessions.len() >= MAX_SESSIONS {
            sessions.pop_front();
        }
        sessions.push_back(session.clone());
        session
    }

    /// The session the request's cookie names, if it is one of ours.
    fn session(&self, headers: &HeaderMap) -> Option<Session> {
        let name = self.cookie_name();
        let ids: Vec<&str> =
            headers.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| cookie_values(v, &name)).collect();
        let sessions = self.sessions.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        // Compare against every session in full, so timing tells nothing about the ids.
        let mut found = None;
        for session in sessions.iter() {
            if ids.iter().any(|id| same_secret(id, &session.id)) {
                found = Some(session.clone());
            }
        }
        found
    }
}

/// Every request passes here first: refused, sent on with a cookie, or let through with
/// its session (and, if it changes something, its CSRF token checked).
pub async fn guard(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let verdict = state.auth.check(request.method(), request.uri(), request.headers());
    let session = match verdict {
        Verdict::Refuse(status, why) => return refusal(status, why),
        Verdict::Exchange { session, location } => {
            let mut response = (StatusCode::SEE_OTHER, [(header::LOCATION, location)]).into_response();
            if let Ok(cookie) = HeaderValue::from_str(&state.auth.set_cookie(&session)) {
                response.headers_mut().insert(header::SET_COOKIE, cookie);
            }
            return response;
        }
        Verdict::Pass(session) => session,
    };
    let mut request = if request.method() == Method::GET || request.method() == Method::HEAD {
        request
    } else {
        let (parts, body) = request.into_parts();
        let Ok(bytes) = to_bytes(body, MAX_FORM_BYTES).await else {
            return refusal(StatusCode::PAYLOAD_TOO_LARGE, "The form is too large.");
        };
        let csrf = form_urlencoded::parse(&bytes).find(|(k, _)| k == CSRF_FIELD).map(|(_, v)| v.into_owned());
        if !Auth::csrf_ok(&session, csrf.as_deref()) {
            return refusal(StatusCode::FORBIDDEN, "The form's CSRF token is missing or stale: reload the page and try again.");
        }
        Request::from_parts(parts, Body::from(bytes))
    };
    request.extensions_mut().insert(session);
    next.run(request).await
}

/// A short page saying why a request was refused.
fn refusal(status: StatusCode, why: &str) -> Response {
    let body =
        format!("<!doctype html><meta charset=\"utf-8\"><title>baton: {status}</title><h1>{status}</h1><p>{}</p>", crate::text::xml(why));
    (status, [(header::CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response()
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The value of query parameter `name`, if present.
fn query_value(uri: &Uri, name: &str) -> Option<String> {
    form_urlencoded::parse(uri.query()?.as_bytes()).find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
}

/// The request's path and query without the access token.
fn without_token(uri: &Uri) -> String {
    let rest: Vec<(String, String)> = uri
        .query()
        .map(|q| {
            form_urlencoded::parse(q.as_bytes()).filter(|(k, _)| k != TOKEN_PARAM).map(|(k, v)| (k.into_owned(), v.into_owned())).collect()
        })
        .unwrap_or_default();
    let mut location = uri.path().to_string();
    if !rest.is_empty() {
        location.push('?');
        location.push_str(&form_urlencoded::Serializer::new(String::new()).extend_pairs(rest).finish());
    }
    location
}

/// Values of cookie `name` in a `Cookie` header.
fn cookie_values<'a>(header: &'a str, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    header.split(';').filter_map(move |pair| pair.trim().strip_prefix(name)?.strip_prefix('='))
}

/// 244 random bits as hex (two v4 UUIDs from the OS's generator).
fn random_secret() -> String {
    format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple())
}

/// Compare secrets in time independent of where they differ.
fn same_secret(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: Method, uri: &str, headers: &[(&str, &str)]) -> (Method, Uri, HeaderMap) {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.append(header::HeaderName::from_bytes(name.as_bytes()).unwrap(), HeaderValue::from_str(value).unwrap());
        }
        (method, uri.parse().unwrap(), map)
    }

    fn judge(auth: &Auth, method: Method, uri: &str, headers: &[(&str, &str)]) -> Verdict {
        let (m, u, h) = request(method, uri, headers);
        auth.check(&m, &u, &h)
    }

    /// A session bought with the token, and its cookie header.
    fn login(auth: &Auth) -> (Session, String) {
        let url = auth.url();
        let path = url.trim_start_matches("http://127.0.0.1:4000");
        match judge(auth, Method::GET, path, &[("host", "127.0.0.1:4000")]) {
            Verdict::Exchange { session, location } => {
                assert_eq!(location, "/");
                let cookie = auth.set_cookie(&session);
                assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"), "{cookie}");
                let pair = cookie.split(';').next().unwrap().to_string();
                (session, pair)
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_token_buys_a_session_cookie_and_nothing_else_gets_in() {
        let auth = Auth::new(4000);
        assert!(auth.url().starts_with("http://127.0.0.1:4000/?token="));
        let host = ("host", "127.0.0.1:4000");
        assert!(matches!(judge(&auth, Method::GET, "/", &[host]), Verdict::Refuse(StatusCode::UNAUTHORIZED, _)));
        assert!(matches!(judge(&auth, Method::GET, "/?token=guess", &[host]), Verdict::Refuse(StatusCode::UNAUTHORIZED, _)));
        let (session, cookie) = login(&auth);
        assert_eq!(judge(&auth, Method::GET, "/runs/x", &[host, ("cookie", &cookie)]), Verdict::Pass(session.clone()));
        let with_others = format!("theme=dark; {cookie}; other=1");
        assert_eq!(judge(&auth, Method::GET, "/", &[host, ("cookie", &with_others)]), Verdict::Pass(session));
        let forged = format!("{}=0000", auth.cookie_name());
        assert!(matches!(judge(&auth, Method::GET, "/", &[host, ("cookie", &forged)]), Verdict::Refuse(StatusCode::UNAUTHORIZED, _)));
        let other_port = Auth::new(4001);
        assert!(matches!(judge(&other_port, Method::GET, "/", &[("host", "127.0.0.1:4001"), ("cookie", &cookie)]), Verdict::Refuse(..)));
    }

    #[test]
    fn the_token_is_dropped_from_the_address_keeping_the_rest() {
        let auth = Auth::new(4000);
        let uri = format!("/?status=open&token={}&template=feature", auth.token);
        match judge(&auth, Method::GET, &uri, &[("host", "localhost:4000")]) {
            Verdict::Exchange { location, .. } => assert_eq!(location, "/?status=open&template=feature"),
            other => panic!("{other:?}"),
        }
        let post = format!("/prune?token={}", auth.token);
        assert!(
            matches!(judge(&auth, Method::POST, &post, &[("host", "127.0.0.1:4000")]), Verdict::Refuse(StatusCode::UNAUTHORIZED, _)),
            "only a page load buys a session"
        );
    }

    #[test]
    fn other_hosts_are_refused_even_with_the_token() {
        let auth = Auth::new(4000);
        let uri = format!("/?token={}", auth.token);
        for host in ["evil.example:4000", "127.0.0.1:4001", "127.0.0.1", "0.0.0.0:4000"] {
            assert!(matches!(judge(&auth, Method::GET, &uri, &[("host", host)]), Verdict::Refuse(StatusCode::FORBIDDEN, _)), "{host}");
        }
        assert!(matches!(judge(&auth, Method::GET, &uri, &[]), Verdict::Refuse(StatusCode::FORBIDDEN, _)), "no Host");
        assert!(auth.host_ok(Some("LOCALHOST:4000")));
    }

    #[test]
    fn changes_must_come_from_our_own_origin() {
        let auth = Auth::new(4000);
        let (session, cookie) = login(&auth);
        let base = [("host", "127.0.0.1:4000"), ("cookie", cookie.as_str())];
        let post = |extra: &[(&str, &str)]| judge(&auth, Method::POST, "/runs/r/cancel", &[&base[..], extra].concat());
        assert_eq!(post(&[("origin", "http://127.0.0.1:4000")]), Verdict::Pass(session.clone()));
        assert_eq!(post(&[("origin", "http://localhost:4000")]), Verdict::Pass(session.clone()));
        assert_eq!(post(&[("referer", "http://127.0.0.1:4000/runs/r")]), Verdict::Pass(session.clone()), "Referer when no Origin");
        for (name, value) in [
            ("origin", "http://127.0.0.1:5000"),
            ("origin", "http://evil.example"),
            ("origin", "null"),
            ("origin", "https://127.0.0.1:4000"),
            ("referer", "http://127.0.0.1:4000.evil.example/"),
            ("referer", "http://127.0.0.1:5000/"),
        ] {
            assert!(matches!(post(&[(name, value)]), Verdict::Refuse(StatusCode::FORBIDDEN, _)), "{name}: {value}");
        }
        assert!(matches!(post(&[]), Verdict::Refuse(StatusCode::FORBIDDEN, _)), "neither Origin nor Referer");
        let evil_with_ours = [("origin", "http://evil.example"), ("referer", "http://127.0.0.1:4000/")];
        assert!(matches!(post(&evil_with_ours), Verdict::Refuse(..)), "Origin wins over Referer");
    }

    #[test]
    fn csrf_tokens_belong_to_their_session() {
        let auth = Auth::new(4000);
        let (a, _) = login(&auth);
        let (b, _) = login(&auth);
        assert!(Auth::csrf_ok(&a, Some(&a.csrf)));
        assert!(!Auth::csrf_ok(&a, Some(&b.csrf)));
        assert!(!Auth::csrf_ok(&a, Some("")));
        assert!(!Auth::csrf_ok(&a, None));
        assert_ne!(a.csrf, b.csrf);
        assert_eq!(a.csrf.len(), 64);
    }

    #[test]
    fn the_oldest_sessions_are_forgotten_first() {
        let auth = Auth::new(4000);
        let (_, first) = login(&auth);
        for _ in 0..MAX_SESSIONS {
            login(&auth);
        }
        let host = ("host", "127.0.0.1:4000");
        assert!(matches!(judge(&auth, Method::GET, "/", &[host, ("cookie", &first)]), Verdict::Refuse(StatusCode::UNAUTHORIZED, _)));
        assert_eq!(auth.sessions.lock().unwrap().len(), MAX_SESSIONS);
    }
}
