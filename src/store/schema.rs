// @generated automatically by Diesel CLI.

diesel::table! {
    use diesel::sql_types::*;
    use pgvector::sql_types::*;

    agent_profiles (id) {
        id -> Uuid,
        organization_id -> Uuid,
        name -> Text,
        system_prompt -> Text,
        greeting -> Text,
        voice_id -> Text,
        language -> Text,
        stt_model -> Text,
        escalation_threshold -> Float4,
        escalation_number -> Nullable<Text>,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
        spoken_lines -> Jsonb,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use pgvector::sql_types::*;

    call_events (id) {
        id -> Int8,
        organization_id -> Uuid,
        call_id -> Uuid,
        event_type -> Text,
        telnyx_event_id -> Nullable<Text>,
        payload -> Jsonb,
        occurred_at -> Timestamptz,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use pgvector::sql_types::*;

    calls (id) {
        id -> Uuid,
        organization_id -> Uuid,
        agent_profile_id -> Nullable<Uuid>,
        direction -> Text,
        from_number -> Text,
        to_number -> Text,
        call_control_id -> Nullable<Text>,
        call_leg_id -> Nullable<Text>,
        call_session_id -> Nullable<Text>,
        status -> Text,
        outcome -> Nullable<Text>,
        end_reason -> Nullable<Text>,
        hangup_cause -> Nullable<Text>,
        hangup_source -> Nullable<Text>,
        started_at -> Timestamptz,
        answered_at -> Nullable<Timestamptz>,
        ended_at -> Nullable<Timestamptz>,
        duration_ms -> Nullable<Int8>,
        summary -> Nullable<Text>,
        sentiment_avg -> Nullable<Float4>,
        sentiment_min -> Nullable<Float4>,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
        owner_instance -> Nullable<Text>,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use pgvector::sql_types::*;

    jobs (id) {
        id -> Uuid,
        organization_id -> Uuid,
        call_id -> Nullable<Uuid>,
        kind -> Text,
        payload -> Jsonb,
        status -> Text,
        attempts -> Int4,
        max_attempts -> Int4,
        run_at -> Timestamptz,
        locked_at -> Nullable<Timestamptz>,
        locked_by -> Nullable<Text>,
        last_error -> Nullable<Text>,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use pgvector::sql_types::*;

    memory_snapshots (id) {
        id -> Uuid,
        organization_id -> Uuid,
        caller_number -> Text,
        call_id -> Nullable<Uuid>,
        summary -> Text,
        facts -> Jsonb,
        embedding -> Vector,
        embedding_model -> Text,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use pgvector::sql_types::*;

    organization_numbers (number) {
        number -> Text,
        organization_id -> Uuid,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use pgvector::sql_types::*;

    organizations (id) {
        id -> Uuid,
        name -> Text,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
        allowed_destination_prefixes -> Nullable<Array<Text>>,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use pgvector::sql_types::*;

    patterns (id) {
        id -> Uuid,
        organization_id -> Uuid,
        problem -> Text,
        resolution -> Text,
        embedding -> Vector,
        embedding_model -> Text,
        success_count -> Int4,
        failure_count -> Int4,
        usage_count -> Int4,
        source_call_id -> Nullable<Uuid>,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
        confirmed -> Bool,
        source_caller -> Nullable<Text>,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use pgvector::sql_types::*;

    phone_numbers (number) {
        number -> Text,
        organization_id -> Uuid,
        agent_profile_id -> Uuid,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use pgvector::sql_types::*;

    refresh_tokens (id) {
        id -> Uuid,
        organization_id -> Uuid,
        user_id -> Uuid,
        family_id -> Uuid,
        token_hash -> Bytea,
        expires_at -> Timestamptz,
        rotated_at -> Nullable<Timestamptz>,
        revoked_at -> Nullable<Timestamptz>,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use pgvector::sql_types::*;

    users (id) {
        id -> Uuid,
        organization_id -> Uuid,
        email -> Text,
        password_hash -> Text,
        role -> Text,
        disabled_at -> Nullable<Timestamptz>,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use pgvector::sql_types::*;

    utterances (id) {
        id -> Int8,
        organization_id -> Uuid,
        call_id -> Uuid,
        seq -> Int4,
        speaker -> Text,
        text -> Text,
        started_ms -> Int8,
        ended_ms -> Int8,
        sentiment_score -> Nullable<Float4>,
        sentiment_label -> Nullable<Text>,
        rolling_sentiment -> Nullable<Float4>,
        interrupted -> Bool,
        latency_ms -> Nullable<Int4>,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use pgvector::sql_types::*;

    webhook_events (event_id) {
        event_id -> Text,
        event_type -> Text,
        call_control_id -> Nullable<Text>,
        organization_id -> Nullable<Uuid>,
        payload -> Jsonb,
        occurred_at -> Nullable<Timestamptz>,
        received_at -> Timestamptz,
    }
}

diesel::joinable!(agent_profiles -> organizations (organization_id));
diesel::joinable!(call_events -> calls (call_id));
diesel::joinable!(call_events -> organizations (organization_id));
diesel::joinable!(calls -> agent_profiles (agent_profile_id));
diesel::joinable!(calls -> organizations (organization_id));
diesel::joinable!(jobs -> calls (call_id));
diesel::joinable!(jobs -> organizations (organization_id));
diesel::joinable!(memory_snapshots -> calls (call_id));
diesel::joinable!(memory_snapshots -> organizations (organization_id));
diesel::joinable!(organization_numbers -> organizations (organization_id));
diesel::joinable!(patterns -> calls (source_call_id));
diesel::joinable!(patterns -> organizations (organization_id));
diesel::joinable!(phone_numbers -> agent_profiles (agent_profile_id));
diesel::joinable!(phone_numbers -> organizations (organization_id));
diesel::joinable!(refresh_tokens -> organizations (organization_id));
diesel::joinable!(refresh_tokens -> users (user_id));
diesel::joinable!(users -> organizations (organization_id));
diesel::joinable!(utterances -> calls (call_id));
diesel::joinable!(utterances -> organizations (organization_id));
diesel::joinable!(webhook_events -> organizations (organization_id));

diesel::allow_tables_to_appear_in_same_query!(
    agent_profiles,
    call_events,
    calls,
    jobs,
    memory_snapshots,
    organization_numbers,
    organizations,
    patterns,
    phone_numbers,
    refresh_tokens,
    users,
    utterances,
    webhook_events,
);
