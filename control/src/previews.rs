//! Pull-request previews (#17), the pure part: what a `pull_request` or `push` delivery to a
//! project's repository webhook asks for, given the project's preview settings and whether the
//! pull request's preview exists. The API (`api/previews.rs`) parses the payload, asks
//! [`decide`], and carries the answer out (an environment copy of the template, deployments at
//! the head, a teardown through `tear_down_all`).

use chrono::{DateTime, Utc};
use serde::Deserialize;

use ::api::{DeploymentState, PreviewStatus};

use crate::store::PreviewSettings;

/// The repository part of a GitHub payload.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
pub struct Repository {
    /// `owner/name`.
    #[serde(default)]
    pub full_name: String,
    #[serde(default)]
    pub clone_url: Option<String>,
    #[serde(default)]
    pub html_url: Option<String>,
    #[serde(default)]
    pub ssh_url: Option<String>,
}

/// A branch end of a pull request.
#[derive(Debug, Clone, Deserialize)]
pub struct Branch {
    pub sha: String,
    #[serde(rename = "ref")]
    pub git_ref: String,
    /// `None` when the fork was deleted.
    #[serde(default)]
    pub repo: Option<Repository>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct PullRequest {
    pub head: Branch,
    pub base: Branch,
    #[serde(default)]
    pub merged: bool,
}

/// The part of a `pull_request` event we use.
#[derive(Debug, Clone, Deserialize)]
pub struct PullRequestEvent {
    pub action: String,
    pub number: i32,
    pub pull_request: PullRequest,
    pub repository: Repository,
}

/// The part of a `push` event we use.
#[derive(Debug, Clone, Deserialize)]
pub struct PushEvent {
    #[serde(rename = "ref")]
    pub git_ref: String,
    pub after: String,
    #[serde(default)]
    pub deleted: bool,
    pub repository: Repository,
}

/// The environment name of pull request `number`'s preview.
pub fn environment_name(number: i32) -> String {
    format!("pr-{number}")
}

/// A repository URL as compared: lower case, without a trailing `/` or `.git`, and the same
/// for `https://host/owner/name`, `git@host:owner/name` and `ssh://git@host/owner/name`.
fn normalized(url: &str) -> String {
    let url = url.trim().to_ascii_lowercase();
    let url = url.trim_end_matches('/');
    let url = url.strip_suffix(".git").unwrap_or(url);
    let rest = if let Some(rest) = url.strip_prefix("git@") {
        rest.replacen(':', "/", 1)
    } else if let Some((_, rest)) = url.split_once("://") {
        let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
        rest.to_owned()
    } else {
        url.to_owned()
    };
    rest.trim_end_matches('/').to_owned()
}

/// Whether a service's `git_url` is the payload's repository (any of its URLs).
pub fn same_repository(git_url: &str, repo: &Repository) -> bool {
    let ours = normalized(git_url);
    [&repo.clone_url, &repo.html_url, &repo.ssh_url]
        .into_iter()
        .flatten()
        .any(|theirs| normalized(theirs) == ours)
}

/// Whether a pull request comes from another repository than the one it targets (a deleted
/// fork counts as one).
pub fn from_fork(pr: &PullRequest) -> bool {
    match (&pr.head.repo, &pr.base.repo) {
        (Some(head), Some(base)) => !head.full_name.eq_ignore_ascii_case(&base.full_name),
        (None, _) => true,
        (Some(_), None) => false,
    }
}

/// What a `pull_request` delivery asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Create the preview (a copy of the template) and deploy the head.
    Open,
    /// Deploy the new head in the existing preview.
    Update,
    /// Tear the preview down and delete it.
    Close,
    /// Nothing to do, and why.
    Ignore(String),
}

/// Pure: what `event` asks for under `settings`, `exists` = the preview of its pull request is
/// open. Closing a preview works whatever the settings say (a preview never outlives its pull
/// request).
pub fn decide(event: &PullRequestEvent, settings: &PreviewSettings, exists: bool) -> Decision {
    let n = event.number;
    let action = event.action.as_str();
    match action {
        "closed" => {
            return if exists {
                Decision::Close
            } else {
                Decision::Ignore(format!("pull request {n} has no preview to close"))
            };
        }
        "opened" | "reopened" | "synchronize" => {}
        other => {
            return Decision::Ignore(format!(
                "pull_request action {:?} changes no preview",
                truncated(other)
            ));
        }
    }
    if !settings.enabled {
        return Decision::Ignore("previews are off for this project".into());
    }
    if from_fork(&event.pull_request) && !settings.allow_forks {
        let fork = event
            .pull_request
            .head
            .repo
            .as_ref()
            .map_or("a deleted fork".to_owned(), |r| truncated(&r.full_name));
        return Decision::Ignore(format!(
            "pull request {n} comes from the fork {fork}; previews of forks are off (allow_forks)"
        ));
    }
    if exists {
        return Decision::Update;
    }
    if settings.template_id.is_none() {
        return Decision::Ignore(
            "previews have no template environment (set template in PUT /projects/{id}/previews)"
                .into(),
        );
    }
    Decision::Open
}

fn truncated(s: &str) -> String {
    s.chars().take(100).collect()
}

/// Pure: whether an awake preview has been idle long enough to sleep: no request and no
/// deployment or wake (`active_at`) for `idle_seconds`. The newest request, when the access
/// logs know one, counts as activity too.
pub fn is_idle(
    now: DateTime<Utc>,
    active_at: DateTime<Utc>,
    last_request: Option<DateTime<Utc>>,
    idle_seconds: i32,
) -> bool {
    let last = last_request.map_or(active_at, |r| r.max(active_at));
    now.signed_duration_since(last) >= chrono::Duration::seconds(i64::from(idle_seconds.max(1)))
}

/// Pure: a preview's status from the newest deployment of each of its services: `failed` if
/// one failed, `deploying` while one is on its way, `ready` when all are, else `pending`.
pub fn preview_status(states: &[DeploymentState]) -> PreviewStatus {
    use DeploymentState as S;
    if states.is_empty() {
        PreviewStatus::Pending
    } else if states.contains(&S::Failed) {
        PreviewStatus::Failed
    } else if states
        .iter()
        .any(|s| matches!(s, S::Queued | S::Building | S::Deploying))
    {
        PreviewStatus::Deploying
    } else if states.iter().all(|s| *s == S::Ready) {
        PreviewStatus::Ready
    } else {
        PreviewStatus::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn repo(full_name: &str) -> Repository {
        Repository {
            full_name: full_name.into(),
            clone_url: Some(format!("https://github.com/{full_name}.git")),
            html_url: Some(format!("https://github.com/{full_name}")),
            ssh_url: Some(format!("git@github.com:{full_name}.git")),
        }
    }

    fn event(action: &str, head: Option<&str>) -> PullRequestEvent {
        let branch = |r: Option<&str>| Branch {
            sha: "a".repeat(40),
            git_ref: "feature".into(),
            repo: r.map(repo),
        };
        PullRequestEvent {
            action: action.into(),
            number: 7,
            pull_request: PullRequest {
                head: branch(head),
                base: branch(Some("acme/shop")),
                merged: false,
            },
            repository: repo("acme/shop"),
        }
    }

    fn on(allow_forks: bool) -> PreviewSettings {
        PreviewSettings {
            enabled: true,
            template_id: Some(Uuid::nil()),
            max_previews: 5,
            allow_forks,
            idle_seconds: None,
        }
    }

    #[test]
    fn a_preview_sleeps_only_after_its_idle_time_without_requests_nor_deploys() {
        let t0 = DateTime::<Utc>::from_timestamp(1_700_000_000, 0).unwrap();
        let s = chrono::Duration::seconds;
        assert!(!is_idle(t0 + s(59), t0, None, 60));
        assert!(is_idle(t0 + s(60), t0, None, 60));
        // A request restarts the clock; an older one than the last deploy does not count.
        assert!(!is_idle(t0 + s(90), t0, Some(t0 + s(40)), 60));
        assert!(is_idle(t0 + s(100), t0 + s(30), Some(t0), 60));
    }

    #[test]
    fn a_pull_request_opens_updates_and_closes_its_preview() {
        let own = Some("acme/shop");
        assert_eq!(
            decide(&event("opened", own), &on(false), false),
            Decision::Open
        );
        assert_eq!(
            decide(&event("reopened", own), &on(false), false),
            Decision::Open
        );
        assert_eq!(
            decide(&event("synchronize", own), &on(false), true),
            Decision::Update
        );
        // Previews turned on after the pull request opened: its next push opens one.
        assert_eq!(
            decide(&event("synchronize", own), &on(false), false),
            Decision::Open
        );
        assert_eq!(
            decide(&event("opened", own), &on(false), true),
            Decision::Update
        );
        assert_eq!(
            decide(&event("closed", own), &on(false), true),
            Decision::Close
        );
        let off = PreviewSettings {
            enabled: false,
            ..on(false)
        };
        // Closing works even once previews are off.
        assert_eq!(decide(&event("closed", own), &off, true), Decision::Close);
        assert!(
            matches!(decide(&event("closed", own), &on(false), false), Decision::Ignore(w) if w.contains("no preview"))
        );
        assert!(
            matches!(decide(&event("opened", own), &off, false), Decision::Ignore(w) if w.contains("off"))
        );
        assert!(
            matches!(decide(&event("labeled", own), &on(false), true), Decision::Ignore(w) if w.contains("labeled"))
        );
        let no_template = PreviewSettings {
            template_id: None,
            ..on(false)
        };
        assert!(
            matches!(decide(&event("opened", own), &no_template, false), Decision::Ignore(w) if w.contains("template"))
        );
    }

    #[test]
    fn forks_are_built_only_when_the_project_allows_it() {
        let fork = event("opened", Some("mallory/shop"));
        assert!(from_fork(&fork.pull_request));
        assert!(
            matches!(decide(&fork, &on(false), false), Decision::Ignore(w) if w.contains("mallory/shop"))
        );
        assert_eq!(decide(&fork, &on(true), false), Decision::Open);
        let deleted = event("synchronize", None);
        assert!(
            matches!(decide(&deleted, &on(false), true), Decision::Ignore(w) if w.contains("deleted fork"))
        );
        assert!(!from_fork(&event("opened", Some("ACME/Shop")).pull_request));
    }

    #[test]
    fn a_service_source_matches_any_url_of_its_repository() {
        let r = repo("acme/shop");
        for url in [
            "https://github.com/acme/shop.git",
            "https://github.com/acme/shop",
            "https://github.com/Acme/Shop/",
            "https://user@github.com/acme/shop.git",
            "git@github.com:acme/shop.git",
        ] {
            assert!(same_repository(url, &r), "{url}");
        }
        for url in [
            "https://github.com/acme/shop2.git",
            "https://github.com/acme/shop/sub",
            "https://gitlab.com/acme/shop.git",
        ] {
            assert!(!same_repository(url, &r), "{url}");
        }
        let local = Repository {
            clone_url: Some("file:///srv/git/app.git".into()),
            ..Repository::default()
        };
        assert!(same_repository("file:///srv/git/app.git", &local));
        assert!(!same_repository("file:///srv/git/other.git", &local));
    }

    #[test]
    fn a_preview_is_ready_when_every_service_is_and_failed_when_one_failed() {
        use DeploymentState as S;
        assert_eq!(preview_status(&[]), PreviewStatus::Pending);
        assert_eq!(preview_status(&[S::Ready, S::Ready]), PreviewStatus::Ready);
        assert_eq!(
            preview_status(&[S::Ready, S::Building]),
            PreviewStatus::Deploying
        );
        assert_eq!(
            preview_status(&[S::Deploying, S::Failed]),
            PreviewStatus::Failed
        );
        assert_eq!(
            preview_status(&[S::Ready, S::Cancelled]),
            PreviewStatus::Pending
        );
    }
}
