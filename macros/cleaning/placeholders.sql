{#- The placeholder strings the source system writes instead of a value, per raw column
    (RAW_DATA.md). The one list every cleaning rule reads. -#}
{% macro pinterest_placeholders() -%}
    {{ return({
        'title': ['No Title Data Available', ''],
        'description': ['No description available Story format', 'No description available', ''],
        'poster_name': ['User Info Error'],
        'follower_count': ['User Info Error'],
        'tag_list': ['N,o, ,T,a,g,s, ,A,v,a,i,l,a,b,l,e'],
        'image_src': ['Image src error.'],
    }) }}
{%- endmacro %}

{#- The column, or null where it holds one of its placeholders, trailing spaces ignored
    (`"User Info Error  "` is one). -#}
{% macro null_if_placeholder(column) -%}
    {%- set placeholders = pinterest_placeholders()[column] -%}
    case
        when {{ rtrim_spaces(column) }} in ({% for value in placeholders %}{{ dbt.string_literal(value) }}{% if not loop.last %}, {% endif %}{% endfor %}) then null
        else {{ column }}
    end
{%- endmacro %}
