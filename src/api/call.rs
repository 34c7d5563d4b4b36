//! Each request names its reply. The [`Reply`] union is what travels (between processes,
//! and as MCP results); code that asks for something gets the one type that answers it,
//! through `crate::calls::call`, and never matches the union again. A reply of another
//! kind is a bug of the answering side, turned into an internal error in one place
//! ([`unexpected`]).

use super::*;
use crate::error::BatonResult;

/// A request whose successful answer is a `Self::Reply`.
pub trait Call {
    /// What answers it.
    type Reply;
    /// The request as it travels.
    fn into_request(self) -> Request;
    /// Its answer out of the union.
    fn reply(reply: Reply) -> BatonResult<Self::Reply>;
}

/// Any request, answered by whatever it is answered with (MCP tools and terminal commands
/// show the answer as it comes).
impl Call for Request {
    type Reply = Reply;

    fn into_request(self) -> Request {
        self
    }

    fn reply(reply: Reply) -> BatonResult<Reply> {
        Ok(reply)
    }
}

/// The error for `reply` answering request `op`, which it cannot.
fn unexpected(op: &str, reply: &Reply) -> BatonError {
    BatonError::internal(format!("baton answered `{op}` with a `{}` reply", reply.kind()))
}

/// `impl Call for $params`: sent as `$request` (built from `$this`), answered by `$answer`
/// (made from `$reply`). Every request type's impl is written through this one.
macro_rules! call {
    ($params:ty => $out:ty, |$this:ident| $request:expr, |$reply:ident| $answer:expr) => {
        impl Call for $params {
            type Reply = $out;

            fn into_request(self) -> Request {
                let $this = self;
                $request
            }

            fn reply($reply: Reply) -> BatonResult<$out> {
                $answer
            }
        }
    };
}

/// `reply`'s `$variant`, unboxed with `boxed`, or the error for answering `$op` with it.
macro_rules! take {
    ($reply:ident, $op:expr, boxed $variant:ident) => {
        match $reply {
            Reply::$variant(answer) => Ok(*answer),
            other => Err(unexpected($op, &other)),
        }
    };
    ($reply:ident, $op:expr, $variant:ident) => {
        match $reply {
            Reply::$variant(answer) => Ok(answer),
            other => Err(unexpected($op, &other)),
        }
    };
}

/// `Call` for a request type sent as `Request::$op`, answered by `Reply::$variant` (boxed
/// on the wire with `boxed`, handed out unboxed).
macro_rules! answered_by {
    ($params:ty, $op:ident => boxed $variant:ident($out:ty)) => {
        call!($params => $out, |this| Request::$op(this), |reply| take!(reply, stringify!($op), boxed $variant));
    };
    ($params:ty, $op:ident => $variant:ident($out:ty)) => {
        call!($params => $out, |this| Request::$op(this), |reply| take!(reply, stringify!($op), $variant));
    };
}

answered_by!(StartWorkflowParams, StartWorkflow => boxed Brief(Brief));
answered_by!(CheckpointParams, Checkpoint => Checkpoint(CheckpointSaved));
answered_by!(ForkRunParams, ForkRun => boxed Brief(Brief));
answered_by!(AwaitHumanParams, AwaitHuman => boxed Brief(Brief));
answered_by!(ListRunsParams, ListRuns => Runs(RunList));
answered_by!(GetRunParams, GetRun => boxed Run(RunDetails));
answered_by!(GetEventParams, GetEvent => boxed Event(EventDetail));
answered_by!(CancelRunParams, CancelRun => boxed Brief(Brief));
answered_by!(GetGraphParams, GetGraph => boxed Graph(GraphView));
answered_by!(WaitForChangeParams, WaitForChange => Changes(ChangeMark));
answered_by!(DeleteRunParams, DeleteRun => Deleted(Deleted));
answered_by!(PruneParams, Prune => Deleted(Deleted));
answered_by!(RecordMergeParams, RecordMerge => boxed Brief(Brief));
answered_by!(SuperviseParams, Supervise => boxed Brief(Brief));
answered_by!(BackupParams, Backup => BackedUp(BackupReport));
answered_by!(ExportParams, Export => Exported(RunsMoved));
answered_by!(ImportParams, Import => Imported(RunsMoved));

/// A brief for whoever acts next: the run's, or (for a task's report or answer) the task's.
#[derive(Debug, Clone, PartialEq)]
pub enum Briefed {
    Run(Box<Brief>),
    Task(Box<TaskBrief>),
}

impl Briefed {
    /// Its note, whichever it is.
    pub fn note(&self) -> Option<&str> {
        match self {
            Briefed::Run(brief) => brief.note.as_deref(),
            Briefed::Task(brief) => brief.note.as_deref(),
        }
    }
}

fn briefed(op: &str, reply: Reply) -> BatonResult<Briefed> {
    match reply {
        Reply::Brief(brief) => Ok(Briefed::Run(brief)),
        Reply::Task(brief) => Ok(Briefed::Task(brief)),
        other => Err(unexpected(op, &other)),
    }
}

call!(AdvanceParams => Briefed, |this| Request::Advance(this), |reply| briefed("Advance", reply));
call!(AnswerHumanParams => Briefed, |this| Request::AnswerHuman(this), |reply| briefed("AnswerHuman", reply));

/// The requests that take no arguments, by name.
macro_rules! without_arguments {
    ($(#[$doc:meta])* $name:ident, $op:ident => $variant:ident($out:ty)) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
        pub struct $name;

        call!($name => $out, |_this| Request::$op(NoParams {}), |reply| take!(reply, stringify!($op), $variant));
    };
}

without_arguments!(
    /// The known templates.
    ListTemplates, ListTemplates => Templates(TemplateList)
);
without_arguments!(
    /// Check the database's integrity.
    Verify, Verify => Verified(VerifyReport)
);
without_arguments!(
    /// Who owns the database.
    AskOwner, OwnerStatus => Owner(OwnerStatus)
);

/// `Call` for an intent of `resume`, answered by `Reply::$variant`.
macro_rules! resume_answered_by {
    ($intent:ident as $kind:ident => boxed $variant:ident($out:ty)) => {
        call!($intent => $out, |this| Request::Resume(Resume::$kind(this).into()), |reply| {
            take!(reply, concat!("Resume (", stringify!($kind), ")"), boxed $variant)
        });
    };
    ($intent:ident as $kind:ident => $variant:ident($out:ty)) => {
        call!($intent => $out, |this| Request::Resume(Resume::$kind(this).into()), |reply| {
            take!(reply, concat!("Resume (", stringify!($kind), ")"), $variant)
        });
    };
}

resume_answered_by!(RunBriefing as Briefing => boxed Briefing(Briefing));
resume_answered_by!(ForkCheckpoint as Fork => boxed Brief(Brief));
resume_answered_by!(ForkAt as ForkAt => boxed Brief(Brief));
resume_answered_by!(Claim as Claim => boxed Task(TaskBrief));
resume_answered_by!(Renew as Renew => boxed Task(TaskBrief));
resume_answered_by!(Release as Release => boxed Task(TaskBrief));
resume_answered_by!(ShowTask as Show => boxed Task(TaskBrief));
resume_answered_by!(ListOpen as List => Runs(RunList));

impl Reply {
    /// The name of the kind of answer (for errors and logs).
    pub fn kind(&self) -> &'static str {
        match self {
            Reply::Brief(_) => "brief",
            Reply::Briefing(_) => "briefing",
            Reply::Task(_) => "task",
            Reply::Runs(_) => "runs",
            Reply::Run(_) => "run",
            Reply::Event(_) => "event",
            Reply::Checkpoint(_) => "checkpoint",
            Reply::Templates(_) => "templates",
            Reply::Graph(_) => "graph",
            Reply::Changes(_) => "changes",
            Reply::Deleted(_) => "deleted",
            Reply::Verified(_) => "verified",
            Reply::BackedUp(_) => "backed_up",
            Reply::Exported(_) => "exported",
            Reply::Imported(_) => "imported",
            Reply::Owner(_) => "owner",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_of_another_kind_is_an_internal_error_naming_both() {
        let reply = Reply::Changes(ChangeMark { counter: 1 });
        let error = GetRunParams::reply(reply).unwrap_err();
        assert_eq!(error.code, crate::error::ErrorCode::Internal);
        assert!(error.message.contains("GetRun") && error.message.contains("changes"), "{}", error.message);
        assert_eq!(WaitForChangeParams::reply(Reply::Changes(ChangeMark { counter: 2 })).unwrap().counter, 2);
    }
}
