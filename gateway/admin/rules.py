"""`/admin/rules`: routing rules in evaluation order; create, edit, reorder, enable, delete; live explain.

Every change goes through services.rules (the API's own functions), which write the audit entry in the
same transaction. The explain panel runs services.explain with the unsaved draft in place of the rule.
"""

from __future__ import annotations

from typing import Any

from flask import abort, flash, jsonify, redirect, render_template, request, url_for
from werkzeug.datastructures import MultiDict

from gateway import store
from gateway.admin import bp, rule_form
from gateway.admin.auth import admin_required, current_user
from gateway.admin.rule_form import Errors, Form
from gateway.api.http import gateway
from gateway.errors import ProblemError
from gateway.services import admin_users, rules, stats
from gateway.services.explain import explain

HISTORY = 20  # audit entries shown under a rule
RECENT_CONTACTS = 20  # offered in the explain panel's contact id field


@bp.get("/rules", endpoint="rules")
@admin_required
def rules_page() -> Any:
    with store.transaction(gateway().engine) as session:
        listed = [rules.rule_out(r) for r in rules.list_rules(session)]
    return render_template("admin/rules.html", rules=listed)


@bp.route("/rules/new", methods=["GET", "POST"])
@admin_required
def rule_new() -> Any:
    if request.method == "GET":
        return _form_page(None, MultiDict({"enabled": "on", "order": "100"}))
    body, errors = rule_form.validate_rule(request.form)
    if body is not None:
        try:
            with store.transaction(gateway().engine) as session:
                saved = rules.create_rule(session, gateway(), body, actor=current_user().name)
        except ProblemError as problem:
            errors = _save_errors(problem, request.form)
        else:
            flash(f"Rule {saved['name']} created.")
            return redirect(url_for("admin.rule_edit", rule_id=saved["id"]))
    return _form_page(None, request.form, errors)


@bp.route("/rules/<rule_id>", methods=["GET", "POST"])
@admin_required
def rule_edit(rule_id: str) -> Any:
    if request.method == "GET":
        with store.transaction(gateway().engine) as session:
            values = rule_form.form_values(rules.rule_out(rules.get_rule(session, rule_id)))
        return _form_page(rule_id, values)
    body, errors = rule_form.validate_rule(request.form)
    if body is not None:
        try:
            with store.transaction(gateway().engine) as session:
                saved = rules.replace_rule(session, gateway(), rule_id, body, actor=current_user().name)
        except ProblemError as problem:
            if problem.status == 404:
                raise
            errors = _save_errors(problem, request.form)
        else:
            flash(f"Rule {saved['name']} saved.")
            return redirect(url_for("admin.rule_edit", rule_id=rule_id))
    return _form_page(rule_id, request.form, errors)


def _save_errors(problem: ProblemError, form: Form) -> Errors:
    if problem.status == 409:  # the only conflict is a name in use
        return {"name": problem.detail}
    return rule_form.problem_errors(problem, rule_form.rule_data(form)[1])


def _form_page(rule_id: str | None, values: Form, errors: Errors | None = None) -> Any:
    """The form; with `errors` it is a failed save (422). Without, an explain's errors are still shown."""
    explained = _explain(values, rule_id) if any(values.get(f) for f in rule_form.CONTACT_FIELDS) else None
    shown = errors or (explained["errors"] if explained else {})
    with store.transaction(gateway().engine) as session:
        recent, _ = stats.recent_contacts(session, RECENT_CONTACTS, None)
        history = admin_users.audit_entries(session, HISTORY, target=rule_id) if rule_id else []
    page = render_template(
        "admin/rule_form.html",
        rule_id=rule_id,
        values=values,
        errors=shown,
        not_saved=bool(errors),
        rows=rule_form.shown_rows(values),
        explained=explained,
        history=history,
        recent=recent,
        categories=rule_form.CATEGORIES,
        channels=rule_form.CHANNELS,
        receipts=rule_form.RECEIPTS,
        max_steps=rule_form.MAX_STEPS,
    )
    return page, 422 if errors else 200


def _explain(form: Form, rule_id: str | None) -> dict[str, Any]:
    """What the explain panel shows for this form: the plan, or why there is none."""
    draft, errors = rule_form.validate_rule(form)
    to, contact_errors = rule_form.explain_request(form)
    errors |= contact_errors
    if to is None and not contact_errors:
        return {"errors": errors, "result": None}
    if draft is None or to is None:
        return {"errors": errors, "result": None, "invalid": True}
    try:
        result = explain(gateway(), to, draft, rule_id)
    except ProblemError as problem:
        return {"errors": errors | rule_form.contact_errors(problem), "result": None, "invalid": True}
    return {"errors": errors, "result": result, "draft_id": rule_id or rules.DRAFT_ID}


@bp.post("/rules/explain")
@admin_required
def rule_explain() -> Any:
    """The explain panel for the draft in the form: JSON for the page's script, the page without it."""
    rule_id = request.form.get("rule_id") or None
    if "application/json" not in request.headers.get("Accept", ""):
        return _form_page(rule_id, request.form)
    explained = _explain(request.form, rule_id)
    html = render_template("admin/_explain.html", explained=explained)
    return jsonify({"html": html, "errors": explained["errors"]})


@bp.post("/rules/<rule_id>/delete")
@admin_required
def rule_delete(rule_id: str) -> Any:
    with store.transaction(gateway().engine) as session:
        name = rules.get_rule(session, rule_id).name
        rules.delete_rule(session, gateway(), rule_id, actor=current_user().name)
    flash(f"Rule {name} deleted.")
    return redirect(url_for("admin.rules"))


@bp.post("/rules/<rule_id>/enabled")
@admin_required
def rule_enabled(rule_id: str) -> Any:
    wanted = request.form.get("enabled")
    if wanted not in ("on", "off"):
        abort(400, "enabled must be on or off")
    with store.transaction(gateway().engine) as session:
        rule = rules.set_enabled(session, gateway(), rule_id, wanted == "on", actor=current_user().name)
    flash(f"Rule {rule['name']} {'enabled' if rule['enabled'] else 'disabled'}.")
    return redirect(url_for("admin.rules"))


@bp.post("/rules/<rule_id>/move")
@admin_required
def rule_move(rule_id: str) -> Any:
    step = {"up": -1, "down": 1}.get(request.form.get("direction", ""))
    if step is None:
        abort(400, "direction must be up or down")
    with store.transaction(gateway().engine) as session:
        rules.move_rule(session, gateway(), rule_id, step, actor=current_user().name)
    return redirect(url_for("admin.rules"))
