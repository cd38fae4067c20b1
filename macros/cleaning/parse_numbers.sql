{#- Numbers arrive as text. Each rule accepts exactly its documented form (RAW_DATA.md) and gives
    null for anything else, which the staging model flags in `unparseable_fields`. The patterns
    carry no backslash, so every engine reads them the same. -#}

{#- "942", "124k" (thousands), "2M" (millions) → bigint; a count beyond bigint is unparseable. -#}
{% macro parse_follower_count(column) -%}
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
{% macro parse_integer(column) -%}
    case
        when {{ matches_pattern(column, '^-?[0-9]+$') }} then {{ try_cast_as(column, 'integer') }}
    end
{%- endmacro %}

{#- A decimal number (`-23.5`, `1e-3`) that is finite as a double. -#}
{% macro parse_decimal(column) -%}
    case
        when
            {{ matches_pattern(column, '^-?[0-9]+([.][0-9]+)?([eE][-+]?[0-9]+)?$') }}
            and abs({{ try_cast_as(column, 'double') }}) <= 1.7976931348623157e308
            then {{ try_cast_as(column, 'double') }}
    end
{%- endmacro %}

{#- "1" → true, "0" → false. -#}
{% macro parse_flag(column) -%}
    case {{ column }} when '1' then true when '0' then false end
{%- endmacro %}
