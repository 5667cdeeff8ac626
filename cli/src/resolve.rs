//! Names to ids: the one place every command turns `--project`, `--environment` and
//! `--service` (or the linked directory, `link.rs`) into the API's ids. A service is named
//! `web`, `shop/web` or `shop/production/web`; an id is accepted wherever a name is. An unknown
//! name is answered with the close matches (edit distance, prefix), an ambiguous one with the
//! candidates; never with a parser's message.

use clap::Args;
use serde_json::Value;

use super::link::Link;
use super::{ApiClient, CliError};

/// The service a command acts on; each flag falls back to the linked directory.
#[derive(Debug, Clone, Default, Args)]
pub struct ServiceArgs {
    /// The service: `web`, `shop/web`, `shop/production/web` or its id (default: the linked
    /// directory's service), e.g. `--service shop/web`.
    #[arg(long, value_name = "SERVICE")]
    pub service: Option<String>,
    /// The service's project, by name or id (default: the linked directory's), e.g.
    /// `--project shop`.
    #[arg(long, value_name = "PROJECT")]
    pub project: Option<String>,
    /// The service's environment, by name or id (default: the linked one, else any), e.g.
    /// `--environment staging`.
    #[arg(long, value_name = "ENVIRONMENT")]
    pub environment: Option<String>,
}

/// The project (and optionally environment) a command acts on; falls back to the link.
#[derive(Debug, Clone, Default, Args)]
pub struct ProjectArgs {
    /// The project, by name or id (default: the linked directory's), e.g. `--project shop`.
    #[arg(long, value_name = "PROJECT")]
    pub project: Option<String>,
    /// The environment, by name or id (default: the linked one, else production), e.g.
    /// `--environment staging`.
    #[arg(long, value_name = "ENVIRONMENT")]
    pub environment: Option<String>,
}

/// A resolved object: its id and what the user would call it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Named {
    pub id: String,
    pub name: String,
}

impl Named {
    fn of(v: &Value) -> Self {
        Self {
            id: v["id"].as_str().unwrap_or_default().to_owned(),
            name: v["name"].as_str().unwrap_or_default().to_owned(),
        }
    }
}

/// A service with the project and environment it lives in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceRef {
    pub project: Named,
    pub environment: Named,
    pub service: Named,
}

impl ServiceRef {
    /// `project/environment/service`.
    pub fn path(&self) -> String {
        format!(
            "{}/{}/{}",
            self.project.name, self.environment.name, self.service.name
        )
    }
}

/// True for the canonical 8-4-4-4-12 hex form the API's ids take.
pub fn is_id(text: &str) -> bool {
    text.len() == 36
        && text.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// Edit distance over chars (insertions, deletions, substitutions and swaps of neighbours
/// count one each: optimal string alignment).
fn distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

/// The candidates close to `given`: a prefix either way or within an edit distance of a third
/// of its length (at least 1), closest first; at most five.
pub fn close_matches<'a>(
    given: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Vec<String> {
    let limit = (given.chars().count() / 3).max(1);
    let mut scored: Vec<(usize, String)> = candidates
        .into_iter()
        .filter_map(|c| {
            let d = distance(given, c);
            let prefix = !given.is_empty() && (c.starts_with(given) || given.starts_with(c));
            (d <= limit || prefix).then(|| (d, c.to_owned()))
        })
        .collect();
    scored.sort();
    scored.dedup_by(|a, b| a.1 == b.1);
    scored.into_iter().take(5).map(|(_, c)| c).collect()
}

/// `shown` is what the user typed (`shop/wbe`), `name` the part compared (`wbe`).
fn not_found<'a>(
    what: &'static str,
    shown: &str,
    name: &str,
    names: impl IntoIterator<Item = &'a str> + Clone,
) -> CliError {
    let mut suggestions = close_matches(name, names.clone());
    let known: Vec<String> = names.into_iter().map(str::to_owned).collect();
    let listed = suggestions.is_empty() && known.len() <= 8;
    if listed {
        suggestions = known;
    }
    CliError::NotFound {
        what,
        name: shown.to_owned(),
        suggestions,
        listed,
    }
}

/// Turns names into ids through the API, with the linked directory as the default.
#[derive(Debug)]
pub struct Resolver<'a> {
    api: &'a ApiClient,
    link: Option<Link>,
}

impl<'a> Resolver<'a> {
    pub fn new(api: &'a ApiClient, link: Option<Link>) -> Self {
        Self { api, link }
    }

    /// Every item of a paged list (`items`, `next`).
    async fn all(&self, path: &str) -> Result<Vec<Value>, CliError> {
        let mut items = vec![];
        let mut after: Option<String> = None;
        loop {
            let sep = if path.contains('?') { '&' } else { '?' };
            let mut page_path = format!("{path}{sep}limit=200");
            if let Some(a) = &after {
                page_path.push_str(&format!("&after={a}"));
            }
            let page: Value = self.api.get(&page_path).await?;
            items.extend(page["items"].as_array().cloned().unwrap_or_default());
            match page["next"].as_str() {
                Some(next) => after = Some(next.to_owned()),
                None => return Ok(items),
            }
        }
    }

    pub async fn projects(&self) -> Result<Vec<Value>, CliError> {
        self.all("/projects").await
    }

    pub async fn services_of(&self, project: &Named) -> Result<Vec<Value>, CliError> {
        self.all(&format!("/projects/{}/services", project.id))
            .await
    }

    pub async fn environments_of(&self, project: &Named) -> Result<Vec<Value>, CliError> {
        let v: Value = self
            .api
            .get(&format!("/projects/{}/environments", project.id))
            .await?;
        Ok(v["items"].as_array().cloned().unwrap_or_default())
    }

    /// A project by name or id.
    pub async fn project_named(&self, given: &str) -> Result<Named, CliError> {
        let projects = self.projects().await?;
        pick("project", given, &projects)
    }

    /// The project of `--project`, else the linked one.
    pub async fn project(&self, args: &ProjectArgs) -> Result<Named, CliError> {
        match (&args.project, &self.link) {
            (Some(given), _) => self.project_named(given).await,
            (None, Some(link)) => Ok(link.project.clone()),
            (None, None) => Err(CliError::NoTarget {
                what: "project",
                flag: "--project",
            }),
        }
    }

    /// An environment of `project` by name or id.
    pub async fn environment_named(&self, project: &Named, given: &str) -> Result<Named, CliError> {
        let envs = self.environments_of(project).await?;
        pick("environment", given, &envs)
    }

    /// The environment of `--environment`, else the link's when the project is the linked one.
    pub async fn environment(
        &self,
        project: &Named,
        given: Option<&str>,
    ) -> Result<Option<Named>, CliError> {
        match (given, &self.link) {
            (Some(given), _) => Ok(Some(self.environment_named(project, given).await?)),
            (None, Some(link)) if link.project.id == project.id => Ok(link.environment.clone()),
            (None, _) => Ok(None),
        }
    }

    /// The service named by `args`, else the linked one.
    pub async fn service(&self, args: &ServiceArgs) -> Result<ServiceRef, CliError> {
        let given = match (&args.service, &self.link) {
            (Some(given), _) => given.clone(),
            (None, Some(link)) if args.project.is_none() && args.environment.is_none() => {
                match (&link.environment, &link.service) {
                    (Some(environment), Some(service)) => {
                        return Ok(ServiceRef {
                            project: link.project.clone(),
                            environment: environment.clone(),
                            service: service.clone(),
                        });
                    }
                    _ => {
                        return Err(CliError::NoTarget {
                            what: "service",
                            flag: "--service",
                        });
                    }
                }
            }
            (None, _) => {
                return Err(CliError::NoTarget {
                    what: "service",
                    flag: "--service",
                });
            }
        };
        if is_id(&given) {
            return self.service_by_id(&given).await;
        }
        let parts: Vec<&str> = given.split('/').collect();
        let (project, environment, name) = match parts.as_slice() {
            [name] => (args.project.clone(), args.environment.clone(), *name),
            [project, name] => (Some((*project).to_owned()), args.environment.clone(), *name),
            [project, env, name] => (Some((*project).to_owned()), Some((*env).to_owned()), *name),
            _ => {
                return Err(CliError::Usage(format!(
                    "--service {given:?}: expected SERVICE, PROJECT/SERVICE or \
                     PROJECT/ENVIRONMENT/SERVICE"
                )));
            }
        };
        // A flag may repeat what the path says, not contradict it.
        let clash = |flag: &str, from_path: Option<&String>, from_flag: &Option<String>| match (
            from_path, from_flag,
        ) {
            (Some(p), Some(f)) if p != f => Err(CliError::Usage(format!(
                "--service {given:?} and {flag} {f:?} name different targets; give one"
            ))),
            _ => Ok(()),
        };
        if parts.len() >= 2 {
            clash("--project", project.as_ref(), &args.project)?;
        }
        if parts.len() == 3 {
            clash("--environment", environment.as_ref(), &args.environment)?;
        }
        // Which projects to look in: the one named, else the linked one, else all.
        // In a linked directory a bare name is looked for in the linked project, and an error
        // names it so (`shop/api`).
        let mut shown = given.clone();
        let projects = match project {
            Some(p) => vec![self.project_named(&p).await?],
            None => match &self.link {
                Some(link) => {
                    shown = format!("{}/{given}", link.project.name);
                    vec![link.project.clone()]
                }
                None => self.projects().await?.iter().map(Named::of).collect(),
            },
        };
        let linked_env = match (&environment, &self.link) {
            (None, Some(link)) if projects.len() == 1 && link.project.id == projects[0].id => {
                link.environment.clone()
            }
            _ => None,
        };
        let mut scope: Vec<ServiceRef> = vec![];
        for project in &projects {
            let envs = self.environments_of(project).await?;
            let wanted = match &environment {
                Some(e) => Some(pick("environment", e, &envs)?),
                None => linked_env.clone(),
            };
            for s in self.services_of(project).await? {
                let env_id = s["environment_id"].as_str().unwrap_or_default();
                if wanted.as_ref().is_some_and(|w| w.id != env_id) {
                    continue;
                }
                let environment = envs
                    .iter()
                    .find(|e| e["id"].as_str() == Some(env_id))
                    .map(Named::of)
                    .unwrap_or_else(|| Named {
                        id: env_id.to_owned(),
                        name: "?".into(),
                    });
                scope.push(ServiceRef {
                    project: project.clone(),
                    environment,
                    service: Named::of(&s),
                });
            }
        }
        let matches: Vec<&ServiceRef> = scope
            .iter()
            .filter(|s| s.service.id == name || s.service.name == name)
            .collect();
        match matches.as_slice() {
            [one] => Ok((*one).clone()),
            [] => Err(not_found(
                "service",
                &shown,
                name,
                scope.iter().map(|s| s.service.name.as_str()),
            )),
            many => Err(CliError::Ambiguous {
                what: "service",
                name: given.clone(),
                candidates: many.iter().map(|s| s.path()).collect(),
            }),
        }
    }
}

impl Resolver<'_> {
    /// A service by id, with its project's and environment's names.
    pub async fn service_by_id(&self, id: &str) -> Result<ServiceRef, CliError> {
        let s: Value = self.api.get(&format!("/services/{id}")).await?;
        let p: Value = self
            .api
            .get(&format!(
                "/projects/{}",
                s["project_id"].as_str().unwrap_or_default()
            ))
            .await?;
        let e: Value = self
            .api
            .get(&format!(
                "/environments/{}",
                s["environment_id"].as_str().unwrap_or_default()
            ))
            .await?;
        Ok(ServiceRef {
            project: Named::of(&p),
            environment: Named::of(&e),
            service: Named::of(&s),
        })
    }
}

/// The one item whose id or name is `given`.
pub(crate) fn pick(what: &'static str, given: &str, items: &[Value]) -> Result<Named, CliError> {
    let matches: Vec<&Value> = items
        .iter()
        .filter(|v| v["id"].as_str() == Some(given) || v["name"].as_str() == Some(given))
        .collect();
    match matches.as_slice() {
        [one] => Ok(Named::of(one)),
        [] => Err(not_found(
            what,
            given,
            given,
            items.iter().filter_map(|v| v["name"].as_str()),
        )),
        many => Err(CliError::Ambiguous {
            what,
            name: given.to_owned(),
            candidates: many.iter().map(|v| Named::of(v).id).collect(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_told_from_names() {
        assert!(is_id("4ef546c0-1b2c-4d5e-8f90-a1b2c3d4e5f6"));
        assert!(!is_id("4ef546c0-1b2c-4d5e-8f90-a1b2c3d4e5f"));
        assert!(!is_id("web"));
        assert!(!is_id("4ef546c0x1b2c-4d5e-8f90-a1b2c3d4e5f6"));
    }

    #[test]
    fn close_matches_by_distance_and_prefix_closest_first() {
        let names = ["web", "worker", "api", "webhooks", "admin"];
        assert_eq!(close_matches("wbe", names), ["web"]);
        assert_eq!(close_matches("web", names), ["web", "webhooks"]);
        assert_eq!(close_matches("wor", names), ["worker"]);
        assert!(close_matches("database", names).is_empty());
        assert_eq!(close_matches("shpo", ["shop", "blog"]), ["shop"]);
        assert_eq!(distance("kitten", "sitting"), 3);
        assert_eq!(distance("ab", "ba"), 1);
        assert_eq!(distance("", "abc"), 3);
    }

    #[test]
    fn an_unknown_name_lists_close_matches_or_all_of_a_short_list() {
        let e = not_found("project", "shpo", "shpo", ["shop", "blog"]);
        assert_eq!(
            e.to_string(),
            "no project named \"shpo\"; did you mean shop?"
        );
        let e = not_found("project", "zzz", "zzz", ["shop", "blog"]);
        assert_eq!(
            e.to_string(),
            "no project named \"zzz\"; there are: shop, blog"
        );
        let e = not_found("project", "zzz", "zzz", []);
        assert_eq!(e.to_string(), "no project named \"zzz\"; there are none");
    }
}
