from django.urls import re_path

from blog import views

# Trailing slashes are optional on purpose: APPEND_SLASH would answer a POST to /posts with a
# redirect that clients replay as GET, silently dropping the write.
urlpatterns = [
    re_path(r"^healthz/?$", views.healthz, name="healthz"),
    re_path(r"^posts/?$", views.posts, name="posts"),
    re_path(r"^posts/count/?$", views.posts_count, name="posts-count"),
]
