//! The direct mode, for a shared PostgreSQL database (`BATON_DATABASE_URL`): there is no
//! owner process to elect, since the database server already serializes writers. Each
//! `baton serve` and terminal command runs the service itself over its own small
//! connection pool, opened on the first call (so a server that is down at start-up only
//! fails calls, each with the reason, until it is back).

use crate::api::{Caller, Envelope, Reply, Request};
use crate::error::{BatonError, BatonResult, ErrorCode};
use crate::service::Service;
use crate::store::Location;
use crate::store::postgres::DatabaseUrl;
use std::sync::Arc;

/// A service over PostgreSQL, opened lazily.
pub struct Direct {
    url: DatabaseUrl,
    /// Shared with this process's notifier, which must use the same store.
    service: Arc<tokio::sync::OnceCell<Service>>,
}

impl Direct {
    pub fn new(url: DatabaseUrl) -> Direct {
        Direct { url, service: Arc::new(tokio::sync::OnceCell::new()) }
    }

    /// Run the notifier of this process (see [`crate::notify`]): with PostgreSQL there is no
    /// owner to tell people, so every long-lived process offers to, and one at a time does.
    /// Waits for the database to be reachable, trying again every few seconds.
    pub fn notify_people(&self, home: crate::home::Home) -> tokio::task::JoinHandle<()> {
        let (url, cell) = (self.url.clone(), Arc::clone(&self.service));
        tokio::spawn(async move {
            let store = loop {
                match open(&cell, &url).await {
                    Ok(service) => break Arc::clone(service.store()),
                    Err(e) => {
                        tracing::info!("notifications wait for the database: {e}");
                        tokio::time::sleep(std::time::Duration::from_secs(5)).await;
                    }
                }
            };
            crate::notify::run(home, store).await;
        })
    }

    /// Where the database is (`host:port/db`, no password).
    pub fn place(&self) -> &str {
        &self.url.place
    }

    /// The service, connecting (and creating or upgrading the schema) on first use.
    pub async fn service(&self) -> BatonResult<&Service> {
        open(&self.service, &self.url).await
    }

    /// Execute `request` for `caller` with a new op id. A retry after a lost connection
    /// happens inside the store, with the same op id.
    pub async fn call_as(&self, caller: Caller, request: Request) -> BatonResult<Reply> {
        if let Request::OwnerStatus(_) = request {
            return Err(BatonError::new(
                ErrorCode::InvalidState,
                format!("baton uses the PostgreSQL database {} (BATON_DATABASE_URL): there is no owner process", self.url.place),
                "Nothing to stop: each baton process connects to the database itself.",
            ));
        }
        let envelope = Envelope { op_id: uuid::Uuid::new_v4().to_string(), caller, request, deadline_ms: None };
        self.service().await?.handle(&envelope).await
    }
}

async fn open<'a>(cell: &'a tokio::sync::OnceCell<Service>, url: &DatabaseUrl) -> BatonResult<&'a Service> {
    cell.get_or_try_init(|| async {
        let store = crate::store::open_at(&Location::Postgres(Box::new(url.clone()))).await?;
        Ok::<_, BatonError>(Service::new(store))
    })
    .await
}
