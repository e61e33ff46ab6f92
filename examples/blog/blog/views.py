"""JSON endpoints of the demo blog: what the operator's tests probe and write through."""

import json
import logging
from collections.abc import Callable
from functools import wraps
from typing import Any

from django.db import DatabaseError, connection, transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_http_methods

from blog.models import HAS_STATUS, HAS_SUBTITLE, STATUS_CHOICES, TITLE_MAX_LENGTH, Category, Post

logger = logging.getLogger(__name__)

DEFAULT_LIMIT = 50
MAX_LIMIT = 1000
STATUSES = {value for value, _label in STATUS_CHOICES}

View = Callable[..., HttpResponse]


class ClientError(Exception):
    """A client error, answered with 400 and its message."""


def _error(message: str, status: int) -> JsonResponse:
    return JsonResponse({"error": message}, status=status)


def database_errors_as_503(view: View) -> View:
    """Answer 503 with the error text instead of Django's HTML 500 while the database is away."""

    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        try:
            return view(request, *args, **kwargs)
        except DatabaseError as exc:
            logger.warning("%s %s: database error: %s", request.method, request.path, exc)
            return _error(f"database error: {exc}", 503)

    return wrapper


@require_GET
def healthz(request: HttpRequest) -> HttpResponse:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except DatabaseError as exc:
        return HttpResponse(f"database unavailable: {exc}", status=503, content_type="text/plain")
    return HttpResponse("ok", content_type="text/plain")


@csrf_exempt
@require_http_methods(["GET", "POST"])
@database_errors_as_503
def posts(request: HttpRequest) -> HttpResponse:
    try:
        if request.method == "POST":
            return _create_post(request)
        return _list_posts(request)
    except ClientError as exc:
        return _error(str(exc), 400)


@require_GET
@database_errors_as_503
def posts_count(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"count": Post.objects.count()})


def _list_posts(request: HttpRequest) -> JsonResponse:
    raw_limit = request.GET.get("limit", str(DEFAULT_LIMIT))
    try:
        limit = int(raw_limit)
    except ValueError:
        raise ClientError(f"limit must be an integer, got {raw_limit!r}") from None
    if not 1 <= limit <= MAX_LIMIT:
        raise ClientError(f"limit must be between 1 and {MAX_LIMIT}")
    # -id breaks ties between posts created within the same clock tick.
    rows = Post.objects.select_related("category").order_by("-created_at", "-id")[:limit]
    return JsonResponse([_post_json(post) for post in rows], safe=False)


def _post_json(post: Post) -> dict[str, Any]:
    item: dict[str, Any] = {
        "id": post.id,
        "title": post.title,
        "category": post.category.name if post.category else None,
    }
    if HAS_STATUS:
        item["status"] = post.status
    if HAS_SUBTITLE:
        item["subtitle"] = post.subtitle
    return item


def _create_post(request: HttpRequest) -> JsonResponse:
    try:
        payload = json.loads(request.body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ClientError(f"invalid JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise ClientError("expected a JSON object")

    title = payload.get("title")
    if not isinstance(title, str) or not title.strip():
        raise ClientError('"title" must be a non-empty string')
    if len(title) > TITLE_MAX_LENGTH:
        raise ClientError(f'"title" is too long (max {TITLE_MAX_LENGTH} characters)')
    body = payload.get("body", "")
    if not isinstance(body, str):
        raise ClientError('"body" must be a string')
    category_name = payload.get("category")
    if category_name is not None and not isinstance(category_name, str):
        raise ClientError('"category" must be a category name or null')
    fields: dict[str, Any] = {"title": title, "body": body}
    # Release 1 does not know about status and ignores the key, like any unknown key.
    if HAS_STATUS and "status" in payload:
        if payload["status"] not in STATUSES:
            raise ClientError(f'"status" must be one of {sorted(STATUSES)}')
        fields["status"] = payload["status"]

    with transaction.atomic():
        if category_name is not None:
            try:
                fields["category"] = Category.objects.get(name=category_name)
            except Category.DoesNotExist:
                raise ClientError(f"unknown category {category_name!r}") from None
        post = Post.objects.create(**fields)
    # The atomic block has committed by now. Only a committed row may be acknowledged with 201:
    # the lost-writes test counts these acknowledgements and expects every one to survive.
    return JsonResponse({"id": post.id}, status=201)
