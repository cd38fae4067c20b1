{#- A person's key: user rows are per post, and a person is identified by (user_name, age,
    date_joined). Null when any of the three is unknown: such a post belongs to no person. -#}
{% macro person_id(user_name, age, date_joined) -%}
    case
        when {{ user_name }} is not null and {{ age }} is not null and {{ date_joined }} is not null
            then md5(concat_ws('|', {{ user_name }}, cast({{ age }} as string), cast({{ date_joined }} as string)))
    end
{%- endmacro %}
