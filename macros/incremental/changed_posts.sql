{#- An incremental model that follows staging post by post (int_posts_enriched, int_post_checks)
    reads again only the posts whose pin, geo or user record staging (re)wrote since its last build:
    staging rewrites a record only with a copy from a later bronze version, so those are exactly the
    records of a version newer than the newest the model holds of that table (its `_pin_version`,
    `_geo_version`, `_user_version`). This is their CTE, `changed_posts`, in an incremental build
    (nothing on a first build); `only_changed_posts` keeps a read of staging to them. -#}
{% macro changed_posts_cte() -%}
    {%- if is_incremental() %}
changed_posts as (
    select ind from {{ ref('stg_pinterest__pins') }} where _bronze_version > {{ version_held('_pin_version') }}
    union
    select ind from {{ ref('stg_pinterest__geo') }} where _bronze_version > {{ version_held('_geo_version') }}
    union
    select ind from {{ ref('stg_pinterest__users') }} where _bronze_version > {{ version_held('_user_version') }}
),
    {%- endif %}
{%- endmacro %}

{% macro only_changed_posts(key='ind') -%}
    {%- if is_incremental() %}
    where {{ key }} in (select ind from changed_posts)
    {%- endif %}
{%- endmacro %}
