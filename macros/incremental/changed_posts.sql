{#- The keys of the posts whose pin, geo or user record staging (re)wrote since the incremental
    model's last build: staging rewrites a record only with a copy from a later bronze version, so
    those are exactly the records of a version newer than the newest the model holds of that table
    (its `_pin_version`, `_geo_version`, `_user_version`). -#}
{% macro changed_posts() -%}
    select ind from {{ ref('stg_pinterest__pins') }} where _bronze_version > {{ version_held('_pin_version') }}
    union
    select ind from {{ ref('stg_pinterest__geo') }} where _bronze_version > {{ version_held('_geo_version') }}
    union
    select ind from {{ ref('stg_pinterest__users') }} where _bronze_version > {{ version_held('_user_version') }}
{%- endmacro %}
