{#- A timestamp from exactly one of the two serializations seen in the wild, zero-padded:
    `2020-08-28 03:52:47` or `2020-08-28T03:52:47`, and a real moment (`2019-02-30` is not, nor is
    year 0000). Anything else (`2019-8-9 1:2:3`, a bare date, a `Z` or an offset) becomes null
    rather than a guess. The pattern does the strict part, the same on every engine; the cast only
    checks the calendar. -#}
{% macro parse_timestamp(expression) -%}
    case
        when
            {{ matches_pattern(expression, '^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])[ T]([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]$') }}
            and substr({{ expression }}, 1, 4) != '0000'
            then {{ try_cast_as("replace(" ~ expression ~ ", 'T', ' ')", 'timestamp') }}
    end
{%- endmacro %}
