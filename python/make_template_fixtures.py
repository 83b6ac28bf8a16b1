#!/usr/bin/env python3
"""Renders chat templates and Jinja feature cases with Python's jinja2, configured the way HF
transformers' apply_chat_template configures it, and writes the expected outputs that the C++
interpreter (src/runtime/jinja) must reproduce byte for byte (tests/runtime/*_test.cpp).

    .venv/bin/python python/make_template_fixtures.py

Reads  tests/fixtures/templates/<name>.jinja  (chat templates, text as published with the models)
Writes tests/fixtures/templates/conversations.json  (message lists and extra template variables)
       tests/fixtures/templates/expected.json       (template x conversation x generation prompt)
       tests/fixtures/templates/jinja_cases.json    (interpreter feature cases)
"""

import datetime
import json
import os
import sys

import jinja2
import jinja2.ext
from jinja2.exceptions import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT_DIR = os.path.join(ROOT, "tests", "fixtures", "templates")

# strftime_now() is pinned so the Llama 3.2 date line is reproducible; the C++ test injects the same.
FIXED_NOW = datetime.datetime(2025, 3, 9, 14, 5, 7)

TEMPLATES = {
    "granite-4.0-h": {"bos_token": "<|end_of_text|>", "eos_token": "<|end_of_text|>"},
    "llama-3.1": {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"},
    "llama-3.2": {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"},
    "qwen2.5": {"bos_token": "", "eos_token": "<|im_end|>"},
    # Qwen3.5's template (thinking on by default, enable_thinking=false closes an empty think
    # block, reasoning kept only after the last user query, XML tool calls): written for this
    # repository following the Qwen3.5 chat template as published in public copies (e.g.
    # llama-cpp-python forks' Qwen35ChatHandler), without Qwen3.6's later preserve_thinking switch
    "qwen3.5": {"bos_token": "", "eos_token": "<|im_end|>"},
    "chatml": {"bos_token": "", "eos_token": "<|im_end|>"},
    "mistral-v3-tools": {"bos_token": "<s>", "eos_token": "</s>"},
    "mixtral-v0.1": {"bos_token": "<s>", "eos_token": "</s>"},
}

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city — «quoted» \"names\" and back\\slashes.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "City name, e.g. 東京"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "precision": {"type": "number", "default": 0.5, "minimum": 1e-07, "maximum": 3.0},
            },
            "required": ["city"],
        },
    },
}

CONVERSATIONS = [
    {"name": "system_user", "messages": [
        {"role": "system", "content": "You are a concise assistant."},
        {"role": "user", "content": "What is the capital of France?"}]},
    {"name": "user_only", "messages": [
        {"role": "user", "content": "Hello!"}]},
    {"name": "multi_turn", "messages": [
        {"role": "system", "content": "  You answer in one sentence.\n"},
        {"role": "user", "content": "Name a prime number."},
        {"role": "assistant", "content": "Seven is prime."},
        {"role": "user", "content": "And an even one?"}]},
    {"name": "assistant_last", "messages": [
        {"role": "user", "content": "Say hi."},
        {"role": "assistant", "content": "Hi!"},
        {"role": "user", "content": "Again."},
        {"role": "assistant", "content": "Hi again!"}]},
    {"name": "empty_content", "messages": [
        {"role": "system", "content": ""},
        {"role": "user", "content": ""},
        {"role": "assistant", "content": ""},
        {"role": "user", "content": " "}]},
    {"name": "unicode", "messages": [
        {"role": "system", "content": "Réponds en français. 日本語も OK.\tTabs\tand \"quotes\" and 'single' and \\backslash\\"},
        {"role": "user", "content": "Emoji 👩‍💻🇫🇷, combining é (e\u0301), CJK 你好世界, RTL שלום, zero\u200bwidth, nbsp\u00a0here\r\nCRLF line"}]},
    {"name": "roles_not_alternating", "messages": [
        {"role": "user", "content": "First."},
        {"role": "user", "content": "Second in a row."}]},
    {"name": "tools", "vars": {"tools": [WEATHER_TOOL]}, "messages": [
        {"role": "system", "content": "Use tools when needed."},
        {"role": "user", "content": "Weather in Zürich?"},
        {"role": "assistant", "content": "", "tool_calls": [{"id": "call12345", "type": "function",
            "function": {"name": "get_weather", "arguments": {"city": "Zürich", "unit": "celsius"}}}]},
        {"role": "tool", "tool_call_id": "call12345", "content": "{\"temp\": 21.5, \"sky\": \"clear ☀\"}"},
        {"role": "user", "content": "Thanks — and tomorrow?"}]},
    {"name": "tools_answered", "vars": {"tools": [WEATHER_TOOL]}, "messages": [
        {"role": "user", "content": "Weather in Zürich?"},
        {"role": "assistant", "content": "", "tool_calls": [{"id": "call12345", "type": "function",
            "function": {"name": "get_weather", "arguments": {"city": "Zürich"}}}]},
        {"role": "tool", "tool_call_id": "call12345", "content": "21.5"},
        {"role": "assistant", "content": "It is 21.5 °C."},
        {"role": "user", "content": "Thanks!"}]},
    {"name": "tools_no_system", "vars": {"tools": [WEATHER_TOOL]}, "messages": [
        {"role": "user", "content": "Weather in Oslo?"}]},
    {"name": "date_string", "vars": {"date_string": "01 Jan 2030"}, "messages": [
        {"role": "user", "content": "What day is it?"}]},
    # thinking switches and reasoning history (Qwen3.5; other templates ignore these fields)
    {"name": "thinking_off", "vars": {"enable_thinking": False}, "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is 2+2?"}]},
    {"name": "thinking_on", "vars": {"enable_thinking": True}, "messages": [
        {"role": "user", "content": "What is 2+2?"}]},
    {"name": "reasoning_history", "messages": [
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "4", "reasoning_content": "  Add them.\n"},
        {"role": "user", "content": "And 3+3?"},
        {"role": "assistant", "content": "<think>\nAdd again.\n</think>\n\n6"}]},
]

FEATURE_CASES = [
    # whitespace control: trim_blocks / lstrip_blocks / - / +
    ("ws_trim_blocks", "{% if true %}\nyes\n{% endif %}\nafter", {}),
    ("ws_lstrip_blocks", "line\n    {% if true %}\n    indented\n    {% endif %}\nend", {}),
    ("ws_minus", "a   {%- if true -%}   b   {%- endif -%}   c", {}),
    ("ws_var_minus", "x  {{- 'y' -}}  z\n", {}),
    ("ws_plus", "a\n  {%+ if true %}b{% endif +%}\nc", {}),
    ("ws_comment", "a\n  {# note #}\nb {#- trimmed -#} c", {}),
    ("ws_var_not_lstripped", "  {{ 'v' }}\n  {% if true %}w{% endif %}", {}),
    ("ws_trailing_newline", "text\n", {}),
    ("ws_crlf", "a\r\n{% if true %}\r\nb\r\n{% endif %}\r\nc", {}),
    ("ws_inline_block_after_text", "abc {% if true %}x{% endif %}\n  {% set y = 1 %}z", {}),
    # literals and printing
    ("lit_print", "{{ 1 }} {{ -2 }} {{ 1.5 }} {{ 1e20 }} {{ 1e-5 }} {{ 0.1 + 0.2 }} {{ 3.0 }} {{ 1e16 }} {{ 123456789012345.6 }}", {}),
    ("lit_bool_none", "{{ true }} {{ True }} {{ false }} {{ none }} {{ None }}", {}),
    ("lit_list_repr", "{{ [1, 'a', \"it's\", none, true, 2.5, [3], {'k': 'v'}] }}", {}),
    ("lit_tuple_repr", "{{ (1, 'b') }} {{ (1,) }} {{ () }}", {}),
    ("lit_string_escapes", "{{ 'a\\tb\\\\c\\'d' }}|{{ \"q\\\"q\" }}|{{ '\\u00e9\\x41' }}|{{ 'x' 'y' }}", {}),
    ("lit_repr_escapes", "{{ ['x\\ny', 'tab\\t', 'quote\\'s', 'both\\'\"', 'é'] }}", {}),
    ("lit_dict_repr", "{{ {'b': 1, 'a': [true, none]} }}", {}),
    # arithmetic and operators
    ("op_arith", "{{ 7 + 3 }} {{ 7 - 10 }} {{ 7 * 3 }} {{ 7 / 2 }} {{ 7 // 2 }} {{ -7 // 2 }} {{ 7 % 3 }} {{ -7 % 3 }} {{ 2 ** 10 }} {{ 2 ** 0.5 }}", {}),
    ("op_float_mod", "{{ 7.5 % 2 }} {{ -7.5 % 2 }} {{ 7.5 // 2 }} {{ 1 + 1.0 }} {{ 10 / 4 }}", {}),
    ("op_concat", "{{ 'a' ~ 1 ~ none ~ true ~ undefined_var ~ [1] }}", {}),
    ("op_string_plus_mul", "{{ 'ab' + 'cd' }} {{ 'ab' * 3 }} {{ [1] + [2, 3] }} {{ [0] * 3 }}", {}),
    ("op_precedence", "{{ 1 + 2 * 3 }} {{ (1 + 2) * 3 }} {{ -2 ** 2 }} {{ 2 * 3 ~ 4 }} {{ not true or true }} {{ 10 - 2 - 3 }}", {}),
    ("op_compare", "{{ 1 < 2 }} {{ 2 <= 2 }} {{ 'a' < 'b' }} {{ [1, 2] < [1, 3] }} {{ 1 == 1.0 }} {{ true == 1 }} {{ 'a' != 'b' }} {{ 1 < 2 < 3 }} {{ 3 > 2 > 2 }}", {}),
    ("op_in", "{{ 'b' in 'abc' }} {{ 2 in [1, 2] }} {{ 'k' in {'k': 1} }} {{ 'z' not in 'abc' }} {{ 'x' in undefined_var }}", {}),
    ("op_and_or_values", "{{ 0 or 'x' }} {{ 'a' and 'b' }} {{ '' and 'b' }}|{{ none or [] }}", {}),
    ("op_ternary", "{{ 'y' if true else 'n' }} {{ 'y' if false else 'n' }} [{{ 'y' if false }}] {{ 'a' if 0 else 'b' if 1 else 'c' }}", {}),
    ("op_unary", "{{ -(3) }} {{ +4 }} {{ -1.5 }} {{ - -2 }} {{ not 0 }}", {}),
    # subscripts, slices, attributes
    ("sub_index", "{{ items[0] }} {{ items[-1] }} {{ 'hello'[1] }} {{ d['k'] }} {{ d.k }} {{ items.1 }}",
     {"items": ["x", "y", "z"], "d": {"k": "v"}}),
    ("sub_slices", "{{ 'abcdef'[1:3] }} {{ 'abcdef'[::-1] }} {{ 'abcdef'[::2] }} {{ [1,2,3,4][1:] }} {{ [1,2,3,4][:-1] }} {{ [1,2,3,4][-2:] }} {{ 'abc'[5:] }}|{{ [1,2,3,4,5][4:0:-2] }}", {}),
    ("sub_slice_extreme_steps", "{{ 'abc'[::9223372036854775807] }} {{ [1, 2, 3][::-9223372036854775807] }} {{ 'abc'[-100:100] }} {{ 'abc'[10:-10:-1] }}", {}),
    ("sub_unicode_slices", "{{ s[0] }} {{ s[-1] }} {{ s[1:3] }} {{ s | length }} {{ s[::-1] }}", {"s": "日本語🎉x"}),
    ("sub_missing", "[{{ d.missing }}][{{ d['missing'] }}][{{ items[10] }}] {{ d.missing is defined }}", {"d": {"k": 1}, "items": [1]}),
    ("sub_dict_method_precedence", "{{ d.items is defined }} {{ d['items'] }} {{ d.get('items') }}", {"d": {"items": "key wins via []"}}),
    # statements
    ("for_loop_vars", "{% for x in ['a', 'b', 'c'] %}{{ loop.index }}{{ loop.index0 }}{{ loop.revindex }}{{ loop.revindex0 }}{{ loop.first }}{{ loop.last }}{{ loop.length }}{{ x }};{% endfor %}", {}),
    ("for_else", "{% for x in [] %}{{ x }}{% else %}empty{% endfor %}|{% for x in [1] %}{{ x }}{% else %}empty{% endfor %}", {}),
    ("for_filter", "{% for x in range(10) if x % 3 == 0 %}{{ x }}{{ loop.last }}{{ loop.length }},{% endfor %}", {}),
    ("for_dict_items", "{% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %}{% for k in d %}{{ k }}{% endfor %}{% for k, v in d|items %}<{{ k }}:{{ v }}>{% endfor %}",
     {"d": {"z": 1, "a": 2, "m": [3]}}),
    ("for_unpack_pairs", "{% for a, b in [[1, 2], (3, 4)] %}{{ a + b }} {% endfor %}{% for (a, b) in [['x', 'y']] %}{{ a }}{{ b }}{% endfor %}", {}),
    ("for_string", "{% for c in 'héllo' %}[{{ c }}]{% endfor %}", {}),
    ("for_nested_loop", "{% for a in [1, 2] %}{% for b in ['x', 'y'] %}{{ loop.index }}{{ a }}{{ b }} {% endfor %}{{ loop.index }}|{% endfor %}", {}),
    ("for_break_continue", "{% for x in range(10) %}{% if x == 2 %}{% continue %}{% endif %}{% if x == 5 %}{% break %}{% endif %}{{ x }}{% endfor %}", {}),
    ("for_scope", "{% set x = 0 %}{% for i in [1, 2] %}{{ x }}{% set x = x + i %}{{ x }}{% endfor %}{{ x }}", {}),
    ("for_prev_next_cycle", "{% for x in [1, 2, 3] %}{{ loop.previtem }}-{{ loop.nextitem }}-{{ loop.cycle('odd', 'even') }} {% endfor %}", {}),
    ("if_elif_else", "{% for n in [1, 2, 3] %}{% if n == 1 %}one{% elif n == 2 %}two{% else %}many{% endif %} {% endfor %}", {}),
    ("set_simple_and_tuple", "{% set a = 1 %}{% set b, c = 2, 3 %}{% set t = 4, 5 %}{{ a }}{{ b }}{{ c }}{{ t }}", {}),
    ("set_block", "{% set body %}Hello {{ name }}!{% endset %}[{{ body }}]{% set up | upper %}shout {{ name }}{% endset %}{{ up }}", {"name": "Ann"}),
    ("set_block_trim", "{% set t | trim %}\n   padded   \n{% endset %}[{{ t }}]", {}),
    ("namespace_counter", "{% set ns = namespace(count=0, names=[]) %}{% for x in 'abc' %}{% set ns.count = ns.count + 1 %}{% set ns.names = ns.names + [x] %}{% endfor %}{{ ns.count }} {{ ns.names }} {{ ns }}", {}),
    ("namespace_from_dict", "{% set ns = namespace({'a': 1}, b=2) %}{{ ns.a }}{{ ns.b }}{{ ns.c is defined }}", {}),
    ("macro_simple", "{% macro greet(name, punct='!') %}Hi {{ name }}{{ punct }}{% endmacro %}{{ greet('Bo') }} {{ greet('Al', '?') }} {{ greet(punct='.', name='Cy') }}", {}),
    ("macro_recursive", "{% macro fact(n) %}{% if n <= 1 %}1{% else %}{{ n * (fact(n - 1) | int) }}{% endif %}{% endmacro %}{{ fact(5) }}", {}),
    ("macro_sees_globals", "{% set prefix = '>' %}{% macro show(x) %}{{ prefix }}{{ x }}{{ extra }}{% endmacro %}{{ show(1) }}", {"extra": "!"}),
    ("filter_block", "{% filter upper %}loud {{ 'voice' }}{% endfilter %}", {}),
    ("generation_block", "{% for m in ['a', 'b'] %}{% generation %}<{{ m }}>{% endgeneration %}{% endfor %}", {}),
    # tests
    ("tests_types", "{{ 1 is number }}{{ 1.5 is float }}{{ 1 is integer }}{{ true is boolean }}{{ true is number }}{{ 's' is string }}{{ {} is mapping }}{{ [] is sequence }}{{ 's' is iterable }}{{ none is none }}{{ x is undefined }}{{ x is iterable }}{{ {} is iterable }}{{ 1 is iterable }}", {}),
    ("tests_values", "{{ 4 is even }}{{ 3 is odd }}{{ 9 is divisibleby 3 }}{{ 9 is divisibleby(4) }}{{ 'abc' is lower }}{{ 'ABC' is upper }}{{ 2 is eq 2 }}{{ 2 is equalto 3 }}{{ none is sameas none }}{{ 1 is in [1] }}{{ 3 is gt 2 }}{{ 2 is le 1 }}{{ true is true }}{{ 0 is false }}", {}),
    ("tests_negated", "{{ x is not defined }} {{ none is not none }} {{ not 1 is string }} {{ range is callable }}", {}),
    # filters
    ("filter_string_case", "{{ 'hello wORLD'|upper }} {{ 'Hello'|lower }} {{ 'hello wORLD-x (y'|title }} {{ 'hELLO world'|capitalize }} {{ 'éa'|upper }}", {}),
    ("filter_trim_replace", "[{{ '  a b \\n'|trim }}][{{ 'xxaxx'|trim('x') }}][{{ 'aaa'|replace('a', 'b') }}][{{ 'aaa'|replace('a', 'b', 2) }}][{{ 'ab'|replace('', '-') }}]", {}),
    ("filter_length_count", "{{ [1, 2]|length }} {{ 'héllo'|length }} {{ {'a': 1}|count }} {{ x|length }}", {}),
    ("filter_join", "{{ [1, 'a', none]|join }} {{ ['a', 'b']|join(', ') }} {{ users|join('/', attribute='name') }}", {"users": [{"name": "x"}, {"name": "y"}]}),
    ("filter_default", "{{ x|default('dflt') }} {{ ''|default('e') }} {{ ''|default('e', true) }} {{ none|default('n') }} {{ x|d('short') }}", {}),
    ("filter_first_last", "{{ [1, 2, 3]|first }} {{ [1, 2, 3]|last }} {{ 'abc'|first }} {{ 'abc'|last }} [{{ []|first }}]", {}),
    ("filter_list_string", "{{ 'abc'|list }} {{ {'a': 1, 'b': 2}|list }} {{ 12|string ~ 'x' }} {{ [1, 'a']|string }}", {}),
    ("filter_int_float", "{{ '42'|int }} {{ '4.7'|int }} {{ 'x'|int }} {{ 'x'|int(7) }} {{ 3.9|int }} {{ '2.5'|float }} {{ 3|float }} {{ 'no'|float }} {{ true|int }} {{ ' 12 '|int }}", {}),
    ("filter_round_abs", "{{ 2.5|round }} {{ 3.5|round }} {{ 2.675|round(2) }} {{ 3|round }} {{ 1.55|round(1) }} {{ 3.14159|round(2, 'floor') }} {{ 3.14159|round(1, 'ceil') }} {{ -3|abs }} {{ -2.5|abs }}", {}),
    ("filter_tojson_basic", "{{ data|tojson }}", {"data": {"s": "é \"q\" \\ \n\t\u0001 🎉", "i": 1, "f": 2.5, "e": 1e-07, "big": 1e20, "b": True, "n": None, "l": [1, [2, {}], []], "u": "日本"}}),
    ("filter_tojson_indent", "{{ data|tojson(indent=2) }}|{{ data|tojson(indent=0) }}|{{ []|tojson(indent=2) }}", {"data": {"a": [1, {"b": None}], "c": {}}}),
    ("filter_tojson_options", "{{ data|tojson(sort_keys=true) }} {{ data|tojson(separators=(',', ':')) }} {{ data|tojson(ensure_ascii=true) }} {{ 'x'|tojson }} {{ 3|tojson }} {{ none|tojson }}",
     {"data": {"z": "é🎉", "a": 1}}),
    ("filter_items_dictsort", "{{ d|items|list }} {{ d|dictsort }} {{ d|dictsort(by='value') }} {{ d|dictsort(reverse=true) }}", {"d": {"b": 2, "a": 3, "C": 1}}),
    ("filter_map_select", "{{ users|map(attribute='name')|list }} {{ users|map(attribute='age', default=0)|list }} {{ ['a', 'B']|map('upper')|list }} {{ [1, 2, 3, 4]|select('odd')|list }} {{ [1, 2, 3, 4]|reject('odd')|list }} {{ [0, 1, '', 'x']|select|list }}",
     {"users": [{"name": "ann", "age": 3}, {"name": "bob"}]}),
    ("filter_selectattr", "{{ msgs|selectattr('role', 'equalto', 'user')|map(attribute='content')|join(',') }} {{ msgs|rejectattr('role', 'eq', 'user')|list|length }} {{ msgs|selectattr('flag')|list|length }} {{ msgs[:1]|selectattr('meta.x', 'defined')|list|length }}",
     {"msgs": [{"role": "user", "content": "a", "flag": True, "meta": {"x": 1}}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "c", "flag": False}]}),
    ("filter_unique_sort", "{{ ['b', 'A', 'a', 'c', 'b']|unique|list }} {{ ['b', 'A', 'a']|unique(case_sensitive=true)|list }} {{ [3, 1, 2]|sort }} {{ ['b', 'A', 'c']|sort }} {{ ['b', 'A']|sort(case_sensitive=true) }} {{ [1, 3, 2]|sort(reverse=true) }} {{ users|sort(attribute='age')|map(attribute='n')|join }}",
     {"users": [{"n": "x", "age": 3}, {"n": "y", "age": 1}]}),
    ("filter_indent", "[{{ 'a\\nb\\n\\nc'|indent }}][{{ 'a\\nb'|indent(2, true) }}][{{ 'a\\n\\nb'|indent(1, blank=true) }}][{{ 'x\\ny'|indent('> ') }}]", {}),
    ("filter_misc", "{{ 'x'|safe }} {{ [3, 1, 2]|min }} {{ [3, 1, 2]|max }} {{ [1, 2, 3]|sum }} {{ [1, 2]|reverse|list }} {{ 'abc'|reverse }} {{ '<a href=\"x\">&'|e }} {{ 'one two  three'|wordcount }}", {}),
    ("filter_chain_precedence", "{{ -3|abs }} {{ 'a' ~ 'b'|upper }} {{ [1, 2]|length + 1 }} {{ ('ab' ~ 'cd')|upper }}", {}),
    # string and dict methods
    ("method_strip_split", "[{{ '  x  '.strip() }}][{{ '--x--'.lstrip('-') }}][{{ '--x--'.rstrip('-') }}] {{ 'a,b,,c'.split(',') }} {{ ' a  b '.split() }} {{ 'a b c'.split(' ', 1) }}", {}),
    ("method_starts_ends", "{{ 'hello'.startswith('he') }} {{ 'hello'.endswith('lo') }} {{ 'hello'.startswith(('x', 'h')) }} {{ 'hello'.endswith('x') }}", {}),
    ("method_case_replace", "{{ 'Hello World'.upper() }} {{ 'Hello'.lower() }} {{ 'hello wORLD'.title() }} {{ 'they\\'re bill'.title() }} {{ 'aXa'.replace('a', 'b') }} {{ 'hello'.capitalize() }}", {}),
    ("method_find_count_join", "{{ 'hello'.find('l') }} {{ 'hello'.find('z') }} {{ 'hello'.count('l') }} {{ '-'.join(['a', 'b']) }} {{ 'a\\nb\\r\\nc'.splitlines() }}", {}),
    ("method_dict", "{{ d.keys()|list }} {{ d.values()|list }} {{ d.items()|list }} {{ d.get('a') }} {{ d.get('zz') }} {{ d.get('zz', 'dflt') }}", {"d": {"a": 1, "b": "two"}}),
    # globals
    ("global_range", "{{ range(3)|list }} {{ range(1, 7, 2)|list }} {{ range(5, 0, -2)|list }}", {}),
    ("global_dict", "{{ dict(a=1, b='x') }}", {}),
    ("strftime_now_pinned", "{{ strftime_now('%Y-%m-%d %H:%M:%S %a %b %d') }}", {}),
    # undefined semantics
    ("undef_printing", "[{{ missing }}][{{ missing|upper }}][{{ missing|trim }}][{{ missing|string }}][{{ missing|list }}][{{ missing|join }}]{{ missing is defined }}{{ missing == missing }}{{ missing|length }}", {}),
    ("undef_iteration", "{% for x in missing %}{{ x }}{% else %}none{% endfor %} {% if missing %}t{% else %}f{% endif %}", {}),
    # errors (the C++ side must also fail; raise_exception messages must match)
    ("err_raise_exception", "before{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}", {}),
    ("err_raise_in_loop", "{% for m in ms %}{% if m == 2 %}{{ raise_exception('bad item: ' ~ m) }}{% endif %}{% endfor %}", {"ms": [1, 2]}),
    ("err_undefined_attr", "{{ missing.attr }}", {}),
    ("err_undefined_arith", "{{ missing + 1 }}", {}),
    ("err_str_plus_int", "{{ 'a' + 1 }}", {}),
    ("err_undefined_tojson", "{{ missing|tojson }}", {}),
    ("err_unsafe_append", "{% set l = [] %}{{ l.append(1) }}", {}),
    ("err_div_zero", "{{ 1 / 0 }}", {}),
    ("err_call_non_callable", "{{ 'abc'() }}", {}),
    ("err_syntax_unclosed", "{% if true %}never closed", {}),
    ("err_syntax_bad_expr", "{{ 1 + }}", {}),
    ("err_syntax_unknown_end", "{% endfor %}", {}),
    ("err_selectattr_nested_missing", "{{ msgs|selectattr('meta.x', 'defined')|list }}", {"msgs": [{"role": "user"}]}),
    ("err_none_iter", "{% for x in none %}{% endfor %}", {}),
    ("err_compare_types", "{{ 1 < 'a' }}", {}),
]


class GenerationBlock(jinja2.ext.Extension):
    """{% generation %}...{% endgeneration %} as HF's AssistantTracker renders it: the body in place
    (HF additionally records which characters it produced, which does not change the text)."""

    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_render_body"), [], [], body).set_lineno(lineno)

    def _render_body(self, caller):
        return caller()


def make_env():
    """The environment HF transformers' chat_template_utils builds, with strftime_now pinned."""

    def raise_exception(message):
        raise TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    def strftime_now(fmt):
        return FIXED_NOW.strftime(fmt)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[GenerationBlock, jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env


def render(env, source, variables):
    try:
        return {"output": env.from_string(source).render(**variables)}
    except Exception as e:  # the expected error is part of the fixture
        return {"error": str(e), "error_type": type(e).__name__}


def main():
    env = make_env()
    expected = []
    for name, special in TEMPLATES.items():
        with open(os.path.join(OUT_DIR, name + ".jinja"), encoding="utf-8", newline="") as f:
            source = f.read()
        for conv in CONVERSATIONS:
            for gen in (True, False):
                variables = {"messages": json.loads(json.dumps(conv["messages"])), "tools": None,
                             "documents": None, "add_generation_prompt": gen, **special}
                variables.update(json.loads(json.dumps(conv.get("vars", {}))))
                case = {"template": name, "conversation": conv["name"], "add_generation_prompt": gen}
                case.update(render(env, source, variables))
                expected.append(case)

    cases = []
    for name, source, variables in FEATURE_CASES:
        case = {"name": name, "template": source, "vars": variables}
        case.update(render(env, source, json.loads(json.dumps(variables))))
        cases.append(case)

    def dump(obj, fname):
        with open(os.path.join(OUT_DIR, fname), "w", encoding="utf-8", newline="\n") as f:
            json.dump(obj, f, ensure_ascii=False, indent=1)
            f.write("\n")

    dump({"templates": TEMPLATES, "now": FIXED_NOW.isoformat(), "conversations": CONVERSATIONS},
         "conversations.json")
    dump(expected, "expected.json")
    dump(cases, "jinja_cases.json")
    errors = sum("error" in c for c in expected)
    print(f"jinja2 {jinja2.__version__}: {len(expected)} chat renders ({errors} errors), {len(cases)} feature cases",
          file=sys.stderr)


if __name__ == "__main__":
    main()
