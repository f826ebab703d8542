"""Code extraction: fenced blocks, the entry point present, format violations."""

from __future__ import annotations

from hpcq.train.extract import defines, extract_code

KERNEL = "void dgemm(int M, int N, int K, const double *A, const double *B, double *C) {\n}\n"


def test_fenced_c_block() -> None:
    got = extract_code(f"Here you go:\n```c\n{KERNEL}```\nDone.", "dgemm")
    assert got.source == KERNEL


def test_last_block_defining_the_entry_wins() -> None:
    naive = KERNEL.replace("{\n}", "{ /* naive */ }")
    text = f"```c\n{naive}```\nbetter:\n```C\n{KERNEL}```\n```text\nnot code\n```"
    assert extract_code(text, "dgemm").source == KERNEL


def test_bare_fence_is_accepted_other_languages_are_not() -> None:
    assert extract_code(f"```\n{KERNEL}```", "dgemm").source == KERNEL
    got = extract_code(f"```python\n{KERNEL}```", "dgemm")
    assert got.source is None and "no ```c code block" in got.message


def test_no_block_is_a_format_violation() -> None:
    got = extract_code(KERNEL, "dgemm")
    assert got.source is None and got.message.startswith("format:")


def test_cut_off_block_is_a_format_violation() -> None:
    got = extract_code("```c\nvoid dgemm(int M", "dgemm")
    assert got.source is None and "not closed" in got.message


def test_declaration_only_is_not_a_definition() -> None:
    decl = "void dgemm(int M, int N, int K, const double *A, const double *B, double *C);\n"
    got = extract_code(f"```c\n{decl}```", "dgemm")
    assert got.source is None and "defines the function dgemm" in got.message
    assert defines(KERNEL, "dgemm") and not defines(decl, "dgemm")
    assert not defines(KERNEL.replace("dgemm", "my_dgemm"), "dgemm")
