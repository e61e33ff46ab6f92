from django.conf import settings
from django.db import models

# Release 1 predates migration 0003_add_post_status; release 2 is the guide's full app; release 3 adds a subtitle
# and an index and retires status (see README.md).
HAS_STATUS: bool = settings.BLOG_RELEASE == 2
HAS_SUBTITLE: bool = settings.BLOG_RELEASE >= 3

TITLE_MAX_LENGTH = 200

STATUS_CHOICES = [
    ("draft", "Draft"),
    ("published", "Published"),
    ("archived", "Archived"),
]


class Category(models.Model):
    name = models.CharField(max_length=100, unique=True)

    def __str__(self) -> str:
        return self.name


class Post(models.Model):
    title = models.CharField(max_length=TITLE_MAX_LENGTH)
    body = models.TextField()
    category = models.ForeignKey(Category, null=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)

    if HAS_STATUS:
        # db_default as well as default: the column keeps a DEFAULT in the database, so release-1
        # code, which omits the column from its INSERTs, still works on the new schema.
        status = models.CharField(max_length=10, choices=STATUS_CHOICES, default="draft", db_default="draft")
    if HAS_SUBTITLE:
        subtitle = models.CharField(max_length=200, null=True, blank=True)

        class Meta:
            indexes = [models.Index(fields=["-created_at", "-id"], name="blog_post_newest_idx")]

    def __str__(self) -> str:
        return self.title
