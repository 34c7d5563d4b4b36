//! The workflow graph of a run, built where the history is: in the owner, from one
//! bounded read of the newest events.

use super::Service;
use crate::api::{GetGraphParams, Reply};
use crate::error::BatonResult;
use crate::graph::GraphView;
use crate::limits::MAX_HISTORY_BYTES;

impl Service {
    pub(super) async fn get_graph(&self, p: &GetGraphParams) -> BatonResult<Reply> {
        let run = self.load(&p.run_id).await?;
        let events = self.store.events(&run.id, 1, run.version, MAX_HISTORY_BYTES).await?;
        Ok(Reply::Graph(Box::new(GraphView::of(&run, &events))))
    }
}
