"""Dashboard page for the documents the built-in `search` tool reads: operators
upload (a text or Markdown file, or pasted text), list and delete them."""

from __future__ import annotations

from pathlib import PurePath

from django import forms
from django.contrib import messages
from django.db.models.functions import Length
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.views.decorators.http import require_http_methods, require_POST

from accounts.models import Team
from accounts.roles import operator_required
from dashboard.rendering import render_page
from tools import services
from tools.models import Document

TEXT_SUFFIXES = (".txt", ".md", ".markdown", ".rst", ".text")


class DocumentForm(forms.Form):
    title = forms.CharField(max_length=200, required=False,
                            help_text="Empty: the file's name. Search ranks words in the title higher.")
    team = forms.ModelChoiceField(queryset=Team.objects.order_by("name"), required=False,
                                  empty_label="Every team (shared)",
                                  help_text="Only this team's agents find it; shared documents every team finds.")
    file = forms.FileField(required=False, help_text="A text or Markdown file (.txt, .md), UTF-8, at most "
                                                     f"{services.MAX_DOCUMENT_BYTES // 1000:,} kB.")
    text = forms.CharField(widget=forms.Textarea(attrs={"rows": 8}), required=False, strip=False,
                           label="Or paste the text")

    def clean(self) -> dict:
        data = super().clean()
        upload, text = data.get("file"), data.get("text") or ""
        if bool(upload) == bool(text.strip()):
            raise forms.ValidationError("Upload a file or paste the text (one of the two).")
        content = _file_text(upload) if upload else text
        if len(content.encode()) > services.MAX_DOCUMENT_BYTES:
            raise forms.ValidationError(f"The document is {len(content.encode()):,} bytes; at most "
                                        f"{services.MAX_DOCUMENT_BYTES:,} are accepted.")
        if "\x00" in content:
            raise forms.ValidationError("The document contains NUL characters: it is not text.")
        title = data.get("title") or (PurePath(upload.name).stem if upload else "")
        if not title:
            self.add_error("title", "Give pasted text a title.")
        data["content"], data["title"] = content, title
        return data


def _file_text(upload) -> str:
    if not upload.name.lower().endswith(TEXT_SUFFIXES):
        raise forms.ValidationError(f"'{upload.name}' is not a text or Markdown file ({', '.join(TEXT_SUFFIXES)}).")
    if upload.size > services.MAX_DOCUMENT_BYTES:
        raise forms.ValidationError(f"'{upload.name}' is {upload.size:,} bytes; at most "
                                    f"{services.MAX_DOCUMENT_BYTES:,} are accepted.")
    try:
        return upload.read().decode("utf-8-sig")
    except UnicodeDecodeError:
        raise forms.ValidationError(f"'{upload.name}' is not UTF-8 text.") from None


@operator_required
@require_http_methods(["GET", "POST"])
def document_list(request: HttpRequest) -> HttpResponse:
    form = DocumentForm(request.POST or None, request.FILES or None)
    if request.method == "POST" and form.is_valid():
        document = services.document_create(actor=request.user, team=form.cleaned_data["team"],
                                            title=form.cleaned_data["title"], content=form.cleaned_data["content"])
        messages.success(request, f"Document '{document.title}' uploaded; the search tool finds it now.")
        return redirect("documents:list")
    documents = Document.objects.select_related("team").annotate(size=Length("content")).order_by("title", "id")
    return render_page(request, "documents/list.html", {"form": form, "documents": documents},
                       status=400 if form.errors else 200)


@operator_required
@require_POST
def document_delete(request: HttpRequest, document_id: int) -> HttpResponse:
    document = get_object_or_404(Document, pk=document_id)
    services.document_delete(actor=request.user, document=document)
    messages.success(request, f"Document '{document.title}' deleted.")
    return redirect("documents:list")
