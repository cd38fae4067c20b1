{#- Age groups with inclusive bounds; an age under 18 (or unknown) gets no group. -#}
{% macro age_group(age) -%}
    case
        when {{ age }} between 18 and 24 then '18-24'
        when {{ age }} between 25 and 35 then '25-35'
        when {{ age }} between 36 and 50 then '36-50'
        when {{ age }} >= 51 then '50+'
    end
{%- endmacro %}
