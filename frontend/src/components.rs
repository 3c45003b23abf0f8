//! Pieces shared by every page: dialogs, form fields, error banners, pager.

use dcp_api_types::Page;
use leptos::{prelude::*, task::spawn_local};

use crate::api::ApiError;

/// The error of a page's load, for its banner: set while the last load
/// failed.
pub(crate) fn load_error<T: Clone + 'static>(
    loaded: LocalResource<Result<T, ApiError>>,
) -> RwSignal<Option<ApiError>> {
    let error = RwSignal::new(None::<ApiError>);
    Effect::new(move || {
        error.set(match loaded.get() {
            Some(Err(e)) => Some(e),
            _ => None,
        });
    });
    error
}

/// A modal dialog with a title; `children` is its body.
#[component]
pub(crate) fn Modal(
    /// Heading of the dialog.
    title: Signal<String>,
    /// Called when the user dismisses the dialog.
    on_close: Callback<()>,
    children: Children,
) -> impl IntoView {
    view! {
        <div class="backdrop" on:click=move |_| on_close.run(())>
            <div class="dialog" role="dialog" aria-modal="true" on:click=|ev| ev.stop_propagation()>
                <h2>{move || title.get()}</h2>
                {children()}
            </div>
        </div>
    }
}

/// A labelled text input bound to `value`, showing the server's error for `field`.
#[component]
pub(crate) fn Field(
    /// The API field name, used for the element id and to match errors.
    field: &'static str,
    /// Prefix for the input's id, e.g. `cluster` → `cluster-name`.
    id_prefix: &'static str,
    /// The label shown.
    label: &'static str,
    /// The value, two-way bound.
    value: RwSignal<String>,
    /// The last error from the server.
    error: RwSignal<Option<ApiError>>,
    /// A multi-line input.
    #[prop(optional)]
    multiline: bool,
    /// A hint under the input.
    #[prop(optional)]
    hint: &'static str,
) -> impl IntoView {
    let id = format!("{id_prefix}-{}", field.replace('_', "-"));
    let message = move || error.get().and_then(|e| e.for_field(field));
    let input = if multiline {
        view! { <textarea id=id.clone() name=field rows="3" bind:value=value></textarea> }
            .into_any()
    } else {
        view! { <input id=id.clone() name=field type="text" autocomplete="off" bind:value=value/> }
            .into_any()
    };
    view! {
        <div class="field" class:invalid=move || message().is_some()>
            <label for=id>{label}</label>
            {input}
            <Show when=move || message().is_some()>
                <p class="field-error" data-field=field>{message}</p>
            </Show>
            <Show when=move || !hint.is_empty() && message().is_none()>
                <p class="hint">{hint}</p>
            </Show>
        </div>
    }
}

/// An error not tied to a field (or any error, when `all` is set): each
/// field's error on its own line, the field said as people read it.
#[component]
pub(crate) fn ErrorBanner(
    /// The last error.
    error: RwSignal<Option<ApiError>>,
    /// Show field errors here too (for forms without that field).
    #[prop(optional)]
    all: bool,
    /// With `all`: the fields a form shows next to their inputs (with their
    /// items: `ports` takes `ports[2].host_port`), left out here.
    #[prop(optional)]
    shown: Vec<String>,
) -> impl IntoView {
    let shown = StoredValue::new(shown);
    let placed = move |field: &str| {
        shown.with_value(|s| {
            s.iter().any(|f| {
                field
                    .strip_prefix(f.as_str())
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('['))
            })
        })
    };
    let lines = move || {
        error.get().map_or_else(Vec::new, |e| {
            let fields = e.field_errors();
            if fields.is_empty() {
                return vec![e.message()];
            }
            if !all {
                return Vec::new();
            }
            fields
                .into_iter()
                .filter(|(field, _)| !placed(field))
                .map(|(field, message)| format!("{}: {message}", crate::api::human_field(&field)))
                .collect()
        })
    };
    view! {
        <Show when=move || !lines().is_empty()>
            <div class="banner error" role="alert">
                {move || lines().into_iter().map(|line| view! { <div>{line}</div> }).collect_view()}
            </div>
        </Show>
    }
}

/// Shows a long form's error: every field it names, and the first of them
/// brought into view (it may be far above or below the button).
pub(crate) fn show_form_error(error: RwSignal<Option<ApiError>>, e: ApiError) {
    error.set(Some(e));
    reveal_first_error();
}

/// Brings the first error of the page into view once it is drawn.
fn reveal_first_error() {
    request_animation_frame(|| {
        let first = web_sys::window().and_then(|w| w.document()).and_then(|d| {
            d.query_selector(".field.invalid, .banner.error")
                .ok()
                .flatten()
        });
        if let Some(element) = first {
            element.scroll_into_view();
        }
    });
}

/// "Page 2 of 5 · 93 items" with previous and next buttons.
#[component]
pub(crate) fn Pager<T: Clone + Send + Sync + 'static>(
    /// The page shown.
    page: Signal<Option<Page<T>>>,
    /// The page number to show; the pager changes it.
    current: RwSignal<u32>,
    /// The noun for the count, singular and plural, e.g. `("cluster", "clusters")`.
    noun: (&'static str, &'static str),
) -> impl IntoView {
    let count = move || page.get().map_or(1, |p| p.page_count());
    let total = move || page.get().map_or(0, |p| p.total);
    view! {
        <div class="pager">
            <span class="count">
                {move || {
                    let n = total();
                    format!("{n} {}", if n == 1 { noun.0 } else { noun.1 })
                }}
            </span>
            <button
                class="ghost"
                disabled=move || { current.get() <= 1 }
                on:click=move |_| current.update(|p| *p = p.saturating_sub(1).max(1))
            >
                "‹ Previous"
            </button>
            <span>{move || format!("Page {} of {}", current.get(), count())}</span>
            <button
                class="ghost"
                disabled=move || { u64::from(current.get()) >= count() }
                on:click=move |_| current.update(|p| *p += 1)
            >
                "Next ›"
            </button>
        </div>
    }
}

/// An RFC 3339 timestamp as "2026-11-22 07:14" (UTC).
pub(crate) fn short_time(rfc3339: &str) -> String {
    rfc3339.get(..16).unwrap_or(rfc3339).replace('T', " ")
}

/// The row a delete dialog asks about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Doomed {
    /// Its id.
    pub(crate) id: i64,
    /// Its name, shown in the question.
    pub(crate) name: String,
}

/// "Delete <noun> <name>?", shown while `target` is set. The server's
/// refusal (e.g. "still used by …") appears in the dialog.
#[component]
pub(crate) fn ConfirmDelete<F, Fut>(
    /// What is deleted, e.g. `cluster`.
    noun: &'static str,
    /// The row asked about; cleared on cancel or success.
    target: RwSignal<Option<Doomed>>,
    /// The API call that deletes a row by id.
    delete: F,
    /// Called after a successful delete.
    on_deleted: Callback<()>,
    /// What deleting means beyond the row, e.g. "Its commands stay."
    #[prop(default = "This cannot be undone.")]
    note: &'static str,
) -> impl IntoView
where
    F: Fn(i64) -> Fut + Copy + Send + Sync + 'static,
    Fut: Future<Output = Result<(), ApiError>> + 'static,
{
    let error = RwSignal::new(None::<ApiError>);
    move || {
        target.get().map(|doomed| {
            error.set(None);
            let confirm = move |_| {
                spawn_local(async move {
                    match delete(doomed.id).await {
                        Ok(()) => {
                            target.set(None);
                            on_deleted.run(());
                        }
                        Err(e) => error.set(Some(e)),
                    }
                });
            };
            view! {
                <Modal title=Signal::derive(move || format!("Delete {noun}"))
                    on_close=Callback::new(move |()| target.set(None))>
                    <p>"Delete " {noun} " " <strong>{doomed.name.clone()}</strong> "? " {note}</p>
                    <ErrorBanner error all=true/>
                    <div class="buttons">
                        <button type="button" class="ghost" on:click=move |_| target.set(None)>"Cancel"</button>
                        <button id="confirm-delete" type="button" class="danger" on:click=confirm>"Delete"</button>
                    </div>
                </Modal>
            }
        })
    }
}

/// Asks before an action that is not a plain delete (revoking a key,
/// rolling a unit back, removing a backend, taking a node out), shown
/// while `target` is set. The server's refusal appears in the dialog.
#[component]
pub(crate) fn Confirm<T, F, Fut>(
    /// The dialog's title.
    title: &'static str,
    /// What is asked about; cleared on cancel or success.
    target: RwSignal<Option<T>>,
    /// The question, said of the target.
    question: fn(&T) -> String,
    /// The confirming button's label.
    action: &'static str,
    /// The confirming button's element id.
    id: &'static str,
    /// Carries the action out.
    run: F,
    /// Called after the action succeeded.
    on_done: Callback<()>,
    /// The action takes something away: a red button.
    #[prop(optional)]
    danger: bool,
) -> impl IntoView
where
    T: Clone + Send + Sync + 'static,
    F: Fn(T) -> Fut + Copy + Send + Sync + 'static,
    Fut: Future<Output = Result<(), ApiError>> + 'static,
{
    let error = RwSignal::new(None::<ApiError>);
    move || {
        target.get().map(|asked| {
            error.set(None);
            let text = question(&asked);
            let confirm = move |_| {
                let asked = asked.clone();
                spawn_local(async move {
                    match run(asked).await {
                        Ok(()) => {
                            target.set(None);
                            on_done.run(());
                        }
                        Err(e) => error.set(Some(e)),
                    }
                });
            };
            view! {
                <Modal title=Signal::derive(move || title.to_owned())
                    on_close=Callback::new(move |()| target.set(None))>
                    <p class="confirm-question">{text}</p>
                    <ErrorBanner error all=true/>
                    <div class="buttons">
                        <button type="button" class="ghost cancel" on:click=move |_| target.set(None)>"Cancel"</button>
                        <button id=id type="button" class=if danger { "danger" } else { "primary" } on:click=confirm>{action}</button>
                    </div>
                </Modal>
            }
        })
    }
}
