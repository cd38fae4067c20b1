{#- The rules that type a raw text field. Each accepts exactly its documented form (RAW_DATA.md)
    and gives null for anything else, which the model then names in `unparseable_fields`. The
    patterns carry no backslash, so every engine reads them the same. -#}

{#- "942", "124k" (thousands), "2M" (millions) → bigint; a count beyond bigint is unparseable. -#}
{% macro follower_count_from_text(column) -%}
    case
        when {{ matches_pattern(column, '^[0-9]+$') }}
            then {{ try_cast_as(column, 'bigint') }}
        when {{ matches_pattern(column, '^[0-9]+k$') }}
            then {{ try_cast_as(dbt.concat(["substr(" ~ column ~ ", 1, length(" ~ column ~ ") - 1)", "'000'"]), 'bigint') }}
        when {{ matches_pattern(column, '^[0-9]+M$') }}
            then {{ try_cast_as(dbt.concat(["substr(" ~ column ~ ", 1, length(" ~ column ~ ") - 1)", "'000000'"]), 'bigint') }}
    end
{%- endmacro %}

{#- An integer, optionally negative, within `integer`: `24.5`, `twenty` and `24 ` are not (never
    rounded). -#}
{% macro integer_from_text(column) -%}
    case
        when {{ matches_pattern(column, '^-?[0-9]+$') }} then {{ try_cast_as(column, 'integer') }}
    end
{%- endmacro %}

{#- A decimal number (`-23.5`, `1e-3`) that is finite as a double. -#}
{% macro decimal_from_text(column) -%}
    case
        when
            {{ matches_pattern(column, '^-?[0-9]+([.][0-9]+)?([eE][-+]?[0-9]+)?$') }}
            and abs({{ try_cast_as(column, 'double') }}) <= 1.7976931348623157e308
            then {{ try_cast_as(column, 'double') }}
    end
{%- endmacro %}

{#- "1" → true, "0" → false. -#}
{% macro flag_from_text(column) -%}
    case {{ column }} when '1' then true when '0' then false end
{%- endmacro %}

{#- A timestamp from exactly one of the two serializations seen in the wild, zero-padded:
    `2020-08-28 03:52:47` or `2020-08-28T03:52:47`, and a real moment (`2019-02-30` is not, nor is
    year 0000). Anything else (`2019-8-9 1:2:3`, a bare date, a `Z` or an offset) becomes null
    rather than a guess. The pattern does the strict part, the same on every engine; the cast only
    checks the calendar. -#}
{% macro timestamp_from_text(column) -%}
    case
        when
            {{ matches_pattern(column, '^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])[ T]([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]$') }}
            and substr({{ column }}, 1, 4) != '0000'
            then {{ try_cast_as("replace(" ~ column ~ ", 'T', ' ')", 'timestamp') }}
    end
{%- endmacro %}

{#- `Local save in /data/art` → `/data/art`. -#}
{% macro path_without_local_save_prefix(column) -%}
    replace({{ column }}, 'Local save in ', '')
{%- endmacro %}
